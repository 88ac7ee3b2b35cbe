package configs

import (
	"fmt"
	"herald/app"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const examplePath = "herald.example.yaml"

// TestExampleEqualsDefault keeps herald.example.yaml and Default() from
// drifting apart: the example spells out exactly the defaults.
func TestExampleEqualsDefault(t *testing.T) {
	c, w, err := Load(examplePath, LoadOptions{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != 0 {
		t.Fatalf("warnings: %v", w)
	}
	want := Default()
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("example differs from Default():\n%s", diff(reflect.ValueOf(c).Elem(), reflect.ValueOf(want).Elem(), ""))
	}
}

// TestExampleHasEveryKey checks that every leaf of Config appears in the
// example, and that each has a comment.
func TestExampleHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	inFile := map[string]bool{}
	var uncommented []string
	collectKeys(doc.Content[0], "", inFile, &uncommented)

	var leaves []string
	leafPaths(reflect.TypeFor[Config](), "", &leaves)
	if len(leaves) < 20 { // sanity: the reflection walk found the tree
		t.Fatalf("only %d leaves found by reflection: %v", len(leaves), leaves)
	}
	for _, leaf := range leaves {
		if inFile[leaf] {
			continue
		}
		// A list that is empty by default (apps[].webhooks) documents the
		// keys of its items in a commented-out example.
		if i := strings.LastIndex(leaf, "[]."); strings.Count(leaf, "[]") >= 1 && i > 0 {
			list := leaf[:i]
			name := leaf[strings.LastIndex(leaf, ".")+1:]
			if inFile[list] && regexp.MustCompile(`(?m)^\s*#[\s-]*`+regexp.QuoteMeta(name)+`:`).Match(data) {
				continue
			}
		}
		t.Errorf("%s: key %s is missing", examplePath, leaf)
	}
	if len(uncommented) > 0 {
		t.Errorf("%s: keys without a comment: %v", examplePath, uncommented)
	}
}

// leafPaths lists the key path of every scalar leaf of struct type t; list
// elements appear as "[]" ("apps[].id"), and a list of scalars is one leaf
// ("cluster.seeds").
func leafPaths(t reflect.Type, prefix string, out *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		p := joinKey(prefix, name)
		switch {
		case isLeaf(f.Type), f.Type.Kind() == reflect.Slice && isLeaf(f.Type.Elem()), f.Type.Kind() == reflect.Map:
			*out = append(*out, p)
		case f.Type.Kind() == reflect.Struct:
			leafPaths(f.Type, p, out)
		case f.Type.Kind() == reflect.Slice:
			leafPaths(f.Type.Elem(), p+"[]", out)
		}
	}
}

// collectKeys records the key path of every scalar value and every list of
// scalars ("seeds: []") in n, and the leaf keys that have no comment (above,
// beside, or, for a list item's first key, above the "-").
func collectKeys(n *yaml.Node, prefix string, keys map[string]bool, uncommented *[]string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := joinKey(prefix, k.Value)
			if v.Kind == yaml.ScalarNode || isScalarList(v) {
				keys[p] = true
				commented := k.HeadComment != "" || k.LineComment != "" || v.LineComment != ""
				if i == 0 && n.HeadComment != "" {
					commented = true
				}
				if !commented {
					*uncommented = append(*uncommented, p)
				}
			}
			collectKeys(v, p, keys, uncommented)
		}
	case yaml.SequenceNode:
		for _, item := range n.Content {
			collectKeys(item, prefix+"[]", keys, uncommented)
		}
	}
}

// isScalarList reports whether n is a list whose items are all scalars
// (an empty list included).
func isScalarList(n *yaml.Node) bool {
	if n.Kind != yaml.SequenceNode {
		return false
	}
	for _, item := range n.Content {
		if item.Kind != yaml.ScalarNode {
			return false
		}
	}
	return true
}

// diff describes where two values of the same type differ, for test output.
func diff(a, b reflect.Value, path string) string {
	switch a.Kind() {
	case reflect.Struct:
		var s string
		for i := range a.NumField() {
			s += diff(a.Field(i), b.Field(i), joinKey(path, yamlName(a.Type().Field(i))))
		}
		return s
	case reflect.Slice:
		if a.Len() != b.Len() {
			return fmt.Sprintf("%s: %d items vs %d\n", path, a.Len(), b.Len())
		}
		var s string
		for i := range a.Len() {
			s += diff(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		return s
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				return fmt.Sprintf("%s: nil vs non-nil\n", path)
			}
			return ""
		}
		return diff(a.Elem(), b.Elem(), path)
	}
	if !reflect.DeepEqual(a.Interface(), b.Interface()) {
		return fmt.Sprintf("%s: %v vs %v\n", path, a.Interface(), b.Interface())
	}
	return ""
}

func TestDiffHelper(t *testing.T) {
	a, b := Default(), Default()
	b.Gateway.Pollers = 3
	b.Apps = append(b.Apps, app.New("x", "y", "z"))
	got := diff(reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem(), "")
	for _, want := range []string{"apps: 1 items vs 2", "gateway.pollers: 0 vs 3"} {
		if !strings.Contains(got, want) {
			t.Errorf("diff = %q, lacks %q", got, want)
		}
	}
}
