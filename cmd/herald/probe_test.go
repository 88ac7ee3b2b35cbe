package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"herald/configs"
	"herald/internal/testkit"
	"herald/node"
	"herald/probe"
)

func TestMain(m *testing.M) { testkit.Main(m) }

func startNode(t *testing.T) *node.Node {
	t.Helper()
	n, err := node.Start(configs.Loopback(t.TempDir()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Stop(ctx)
		http.DefaultClient.CloseIdleConnections()
	})
	return n
}

// TestProbeCommand runs `herald probe` as main runs it: the exit status
// (nil or errProbeFailed), the table, --json and the one-line reason.
func TestProbeCommand(t *testing.T) {
	n := startNode(t)
	url := "ws://" + n.Addr().String()
	args := []string{"--url", url, "--app-id", "app-id", "--key", "app-key", "--secret", "app-secret", "--timeout", "5s"}

	var out, errOut bytes.Buffer
	if err := runProbe(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("probe: %v\n%s%s", err, out.String(), errOut.String())
	}
	for _, s := range probe.Steps {
		if !strings.Contains(out.String(), s+" ") {
			t.Fatalf("table lacks %s:\n%s", s, out.String())
		}
	}
	if !strings.HasSuffix(out.String(), "probe ok\n") || !strings.Contains(out.String(), "clock_skew") {
		t.Fatalf("table:\n%s", out.String())
	}

	out.Reset()
	if err := runProbe(context.Background(), append(args, "--json"), &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OK    bool `json:"ok"`
		Steps []struct {
			Name  string  `json:"name"`
			OK    bool    `json:"ok"`
			MS    float64 `json:"ms"`
			Error string  `json:"error"`
		} `json:"steps"`
		Skew *struct {
			MS     int64  `json:"ms"`
			Source string `json:"source"`
		} `json:"skew"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil || !doc.OK || len(doc.Steps) != len(probe.Steps) || doc.Skew == nil {
		t.Fatalf("json %v: %s", err, out.String())
	}

	out.Reset()
	errOut.Reset()
	bad := append(append([]string{}, args[:6]...), "--secret", "wrong", "--json")
	err := runProbe(context.Background(), bad, &out, &errOut)
	if !errors.Is(err, errProbeFailed) {
		t.Fatalf("wrong secret: %v", err)
	}
	reason := errOut.String()
	if !strings.HasPrefix(reason, "herald: probe failed: subscribe_private: ") || strings.Count(reason, "\n") != 1 {
		t.Fatalf("reason %q", reason)
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil || doc.OK {
		t.Fatalf("failed run's json %v: %s", err, out.String())
	}

	if err := runProbe(context.Background(), []string{"--url", url}, &out, &errOut); err == nil || errors.Is(err, errProbeFailed) {
		t.Fatalf("missing credentials: %v", err)
	}
}

// TestProbeEvery runs the monitoring mode until its context ends and
// scrapes the metrics it serves meanwhile.
func TestProbeEvery(t *testing.T) {
	n := startNode(t)
	addr := testkit.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runProbe(ctx, []string{"--url", "ws://" + n.Addr().String(), "--app-id", "app-id", "--key", "app-key",
			"--secret", "app-secret", "--every", "1s", "--metrics-listen", addr}, pw, io.Discard)
		pw.Close()
	}()
	buf := make([]byte, 4096)
	k, err := pr.Read(buf) // the first run's line
	if err != nil || !strings.Contains(string(buf[:k]), " ok ") {
		t.Fatalf("first run: %q %v", buf[:k], err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	var body string
	testkit.WaitFor(t, 5*time.Second, func() error {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if body = string(b); !strings.Contains(body, "herald_probe_success 1") {
			return errors.New("no herald_probe_success 1 in the scrape")
		}
		return nil
	})
	if !strings.Contains(body, `herald_probe_step_duration_seconds_count{step="receive_public"}`) {
		t.Fatalf("metrics:\n%s", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("monitor ended with %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
}
