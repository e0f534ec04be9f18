package main

import (
	"testing"

	"pushd/cluster"
	"pushd/cluster/failover"
	"pushd/component"
	"pushd/component/dispatch"
	"pushd/component/sip"
	"pushd/internal/store"
	"pushd/queue"
	"pushd/router"
)

// The record kinds are the wire meaning of replication: their numbers
// never change (issue 11 kept those of the record types before it), and
// this node applies each of them.
func TestRecordKindsFixed(t *testing.T) {
	kinds := (&clusterNode{n: &node{}}).kinds()
	for want, k := range map[cluster.Kind]cluster.Kind{
		1: queue.KindAppend, 2: queue.KindTrim, 3: queue.KindRemove, 4: queue.KindDrop,
		5: router.KindSession, 6: router.KindSessionGone, 7: store.KindAccount, 8: router.KindStanza,
		9: component.KindRegistration, 10: failover.KindHandoverEnd, 11: queue.KindOfflineAdd, 12: queue.KindOfflineTrim, 13: failover.KindTakenOver,
		14: sip.KindBinding, 15: dispatch.KindSwitch, 16: sip.KindInCall,
	} {
		if k != want {
			t.Errorf("kind %d is now %d", want, k)
		}
		if kinds[k] == nil {
			t.Errorf("kind %d not applied", k)
		}
	}
}
