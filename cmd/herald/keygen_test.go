package main

import (
	"bytes"
	"encoding/base64"
	"testing"
)

func TestKeygen(t *testing.T) {
	var a, b bytes.Buffer
	if err := keygenCmd(nil, &a); err != nil {
		t.Fatal(err)
	}
	if err := keygenCmd(nil, &b); err != nil {
		t.Fatal(err)
	}
	if a.String() == b.String() {
		t.Fatal("two keys are equal")
	}
	k, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(a.Bytes())))
	if err != nil || len(k) != 32 {
		t.Fatalf("keygen printed %q: %d bytes, %v", a.String(), len(k), err)
	}
	if err := keygenCmd([]string{"extra"}, &a); err == nil {
		t.Fatal("keygen accepted an argument")
	}
}
