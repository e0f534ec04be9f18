package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// pushd cluster status|where through a running node's admin endpoint, and
// accounts added on one node reach every node (issue 5).
func TestClusterCommands(t *testing.T) {
	nodes := clusterOf(t, 2, nil)
	n1, n2 := nodes[0], nodes[1]
	// The test config written for subcommands lacks [cluster]: status asks
	// the node, which knows.
	if _, err := runCmd(t, "pw\n", "user", "add", "--config", n1.cfgFile, "carol"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "carol on n2", 10*time.Second, func() bool {
		_, err := n2.db.Accounts().Credentials(mustJID(t, "carol@localhost"))
		return err == nil
	})
	out, err := runCmd(t, "", "cluster", "status", "--json", "--config", n2.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Node    string `json:"node"`
		Members []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if st.Node != "n2" || len(st.Members) != 2 || st.Members[0].State != "alive" || st.Members[1].State != "alive" {
		t.Fatalf("status: %s", out)
	}
	out, err = runCmd(t, "", "cluster", "where", "--json", "--config", n1.cfgFile, "carol")
	if err != nil {
		t.Fatal(err)
	}
	var w struct{ Primary, Backup string }
	_ = json.Unmarshal([]byte(out), &w)
	p, b := n1.cluster.c.Placement().PrimaryBackup("carol@localhost")
	if w.Primary != p || w.Backup != b || p == b {
		t.Fatalf("where: %s, want primary %s backup %s", out, p, b)
	}
	if out, err := runCmd(t, "", "cluster", "status", "--config", n1.cfgFile); err != nil || !strings.Contains(out, "n1") || !strings.Contains(out, "n2") {
		t.Fatalf("status: %q %v", out, err)
	}
}
