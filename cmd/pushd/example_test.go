package main

import (
	"fmt"
	"testing"
)

// The documented example must parse and say exactly the embedded
// defaults, so the two cannot drift apart.
func TestExampleConfigIsTheDefaults(t *testing.T) {
	got, err := loadConfig("../../docs/pushd.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := defaultFileConfig()
	want.DataDir = "../../docs/data"
	// %+v prints nil and empty slices alike, which is the equality wanted.
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Errorf("example config differs from the defaults:\n got %+v\nwant %+v", got, want)
	}
}
