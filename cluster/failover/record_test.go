package failover

import (
	"slices"
	"testing"

	"pushd/cluster/record"
)

func TestHandoverEndRecord(t *testing.T) {
	for _, served := range [][]string{nil, {"a@x", "b@x"}} {
		rec := HandoverEndRecord(served)
		later := rec
		later.Body = append(slices.Clip(rec.Body), 0x01, 'z') // a later revision's field
		for _, r := range []record.Record{rec, later} {
			got, err := DecodeHandoverEnd(r)
			if err != nil || !slices.Equal(got, served) {
				t.Fatalf("served %v: got %v, %v", served, got, err)
			}
		}
	}
	if _, err := DecodeHandoverEnd(record.Record{Kind: KindHandoverEnd, Body: []byte{2, 1}}); err == nil {
		t.Fatal("truncated body decoded")
	}
}
