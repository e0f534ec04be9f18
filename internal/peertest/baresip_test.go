package peertest

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

// ctrl_tcp frames every message as a netstring; a bad frame must end the
// reader with an error, never hand it a truncated message.
func TestReadNetstring(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		bad  bool
	}{
		{in: `3:abc,`, want: []string{"abc"}},
		{in: `2:{},7:{"a":1},`, want: []string{"{}", `{"a":1}`}},
		{in: `0:,`, want: []string{""}},
		{in: `3:abcd`, bad: true},
		{in: `x:abc,`, bad: true},
		{in: `-1:,`, bad: true},
		{in: `99999999:`, bad: true},
		{in: `5:ab`, bad: true},
	} {
		r := bufio.NewReader(strings.NewReader(tc.in))
		var got []string
		var err error
		for {
			var msg []byte
			if msg, err = readNetstring(r); err != nil {
				break
			}
			got = append(got, string(msg))
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
		if bad := !errors.Is(err, io.EOF); bad != tc.bad {
			t.Errorf("%q: error %v, want bad=%v", tc.in, err, tc.bad)
		}
	}
}
