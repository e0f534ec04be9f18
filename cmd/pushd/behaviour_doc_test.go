package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// Every behaviour id the Go code cites has its row in docs/behaviour.md,
// so a reader who meets "M9" or "H2" in a comment can look it up. Numbers
// of 20 and up are not ids (P50, P99 percentiles; the P-256 curve).
func TestBehaviourIdsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/behaviour.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^\| ([MCPLHOS][0-9]+) \|`).FindAllStringSubmatch(string(doc), -1) {
		rows[m[1]]++
	}
	for id, n := range rows {
		if n != 1 {
			t.Errorf("docs/behaviour.md has %d rows for %s", n, id)
		}
	}
	idRe := regexp.MustCompile(`\b([MCPLHOS])([0-9]+)\b`)
	cited := map[string][]string{}
	err = filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && path != "../.." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range idRe.FindAllStringSubmatch(string(src), -1) {
			if n, _ := strconv.Atoi(m[2]); n >= 1 && n < 20 {
				cited[m[0]] = append(cited[m[0]], path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(cited) < 20 {
		t.Fatalf("found only %d cited ids: is the walk rooted at the repository?", len(cited))
	}
	var missing []string
	for id, files := range cited {
		if rows[id] == 0 {
			missing = append(missing, id+" (cited in "+files[0]+")")
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("ids cited by the code but not in docs/behaviour.md:\n%s", strings.Join(missing, "\n"))
	}
}
