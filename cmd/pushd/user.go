package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"pushd/internal/admin"
	"pushd/internal/store"
)

const userUsage = `usage: pushd user add|del|passwd|list [--config FILE] [JID]
The password is read from standard input (first line).`

// cmdUser changes accounts. A running node holds the database lock, so
// the command asks it through the admin endpoint; with no node running it
// opens the data directory itself.
func cmdUser(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, userUsage)
		return flag.ErrHelp
	}
	verb := args[0]
	fs := flag.NewFlagSet("user "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (TOML)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	var user string
	switch verb {
	case "add", "del", "passwd":
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, userUsage)
			return flag.ErrHelp
		}
		if user = fs.Arg(0); user == "" {
			return errors.New("empty JID")
		}
	case "list":
	default:
		fmt.Fprintln(stderr, userUsage)
		return fmt.Errorf("unknown user command %q", verb)
	}
	var password string
	if verb == "add" || verb == "passwd" {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read password: %w", err)
		}
		if password = strings.TrimRight(line, "\r\n"); password == "" {
			return errors.New("empty password on standard input")
		}
	}
	users, done, err := userStore(cfg)
	if err != nil {
		return err
	}
	defer done()
	switch verb {
	case "add":
		return users.AddUser(user, password)
	case "del":
		return users.DeleteUser(user)
	case "passwd":
		return users.SetPassword(user, password)
	}
	list, err := users.ListUsers()
	if err != nil {
		return err
	}
	for _, u := range list {
		fmt.Fprintln(stdout, u)
	}
	return nil
}

// userStore returns the running node's admin API or, when none answers,
// the data directory opened directly.
func userStore(cfg fileConfig) (admin.Users, func(), error) {
	if cfg.Admin.Listen != "" {
		tok, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.token"))
		if err == nil {
			c := &admin.Client{Addr: cfg.Admin.Listen, Token: strings.TrimSpace(string(tok))}
			if _, err := c.ListUsers(); err == nil {
				return c, func() {}, nil
			} else if !errors.Is(err, admin.ErrNoNode) {
				return nil, nil, err
			}
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, nil, err
	}
	db, err := store.Open(store.Config{Dir: filepath.Join(cfg.DataDir, "db"), Domain: cfg.Domain, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, nil, fmt.Errorf("open data dir (is a node running without an admin listener?): %w", err)
	}
	return offlineUsers{db: db, domain: cfg.Domain}, func() { _ = db.Close() }, nil
}

// offlineUsers changes accounts in a data directory no node is using.
type offlineUsers struct {
	db     *store.DB
	domain string
}

func (u offlineUsers) AddUser(user, password string) error {
	j, err := userJID(user, u.domain)
	if err != nil {
		return err
	}
	return mapStoreErr(u.db.Accounts().Add(j, password))
}

func (u offlineUsers) DeleteUser(user string) error {
	j, err := userJID(user, u.domain)
	if err != nil {
		return err
	}
	return mapStoreErr(u.db.Accounts().Delete(j))
}

func (u offlineUsers) SetPassword(user, password string) error {
	j, err := userJID(user, u.domain)
	if err != nil {
		return err
	}
	return mapStoreErr(u.db.Accounts().SetPassword(j, password))
}

func (u offlineUsers) ListUsers() ([]string, error) { return listUsers(u.db) }
