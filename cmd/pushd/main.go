// Command pushd is the whole push system in one binary: an XMPP server
// (router + session manager) that keeps suspended phones reachable, its
// push component, and the operator commands around them.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `usage: pushd <command> [flags]

commands:
  serve     run a node (XMPP router, session manager, admin endpoint)
  user      add, delete, list users or change a password
  component run the push component alone against a foreign router (--config FILE)
  device    list or delete push registrations (device list|del)
  sip       list SIP bindings (sip bindings [USER])
  push      send a test push to a user's devices (push test JID), or stop and
            resume every push of the cluster (push disable|enable|status)
  cluster   cluster status, or where a user lives (cluster status|where)
  config    check a config file as serve or component would read it (config check FILE)
  bench     measure throughput, latency, memory and failover (bench c2s|push|cluster|sip)
  version   print the version
`

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "pushd:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stderr)
	case "user":
		return cmdUser(args[1:], stdin, stdout, stderr)
	case "component":
		return cmdComponent(args[1:], stderr)
	case "device":
		return cmdDevice(args[1:], stdout, stderr)
	case "push":
		return cmdPush(args[1:], stdout, stderr)
	case "sip":
		return cmdSIP(args[1:], stdout, stderr)
	case "cluster":
		return cmdCluster(args[1:], stdout, stderr)
	case "config":
		return cmdConfig(args[1:], stdout, stderr)
	case "bench":
		return cmdBench(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "pushd", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
