package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client calls a running node's admin API.
type Client struct {
	Addr  string
	Token string
	HTTP  *http.Client
}

// ErrNoNode means nothing answers at the admin address: the node is not
// running, and the caller may open the data directory itself.
var ErrNoNode = errors.New("admin: no node running at the admin address")

// errNotImplemented: the node serves no such part of the API (501).
var errNotImplemented = errors.New("admin: not served by this node")

func (c *Client) do(ctx context.Context, method, path string, body any, out any) error {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.Addr+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := hc.Do(req)
	if err != nil {
		if strings.Contains(err.Error(), "connection refused") {
			return ErrNoNode
		}
		return fmt.Errorf("admin: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch resp.StatusCode {
	case http.StatusOK, http.StatusNoContent:
		if out != nil {
			return json.Unmarshal(msg, out)
		}
		return nil
	case http.StatusConflict:
		return ErrExists
	case http.StatusNotFound:
		return fmt.Errorf("%w: %s", ErrNotFound, strings.TrimSpace(string(msg)))
	case http.StatusNotImplemented:
		return fmt.Errorf("%w: %s", errNotImplemented, strings.TrimSpace(string(msg)))
	}
	return fmt.Errorf("admin: %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(msg)))
}

// AddUser, DeleteUser, SetPassword and ListUsers make Client an admin.Users.
func (c *Client) AddUser(user, password string) error {
	return c.do(context.Background(), http.MethodPost, "/api/users", userRequest{User: user, Password: password}, nil)
}

func (c *Client) DeleteUser(user string) error {
	return c.do(context.Background(), http.MethodDelete, "/api/users", userRequest{User: user}, nil)
}

func (c *Client) SetPassword(user, password string) error {
	return c.do(context.Background(), http.MethodPut, "/api/users/password", userRequest{User: user, Password: password}, nil)
}

func (c *Client) ListUsers() ([]string, error) {
	var users []string
	err := c.do(context.Background(), http.MethodGet, "/api/users", nil, &users)
	return users, err
}

// Memory asks the node for its live heap and stacks after a collection.
func (c *Client) Memory() (Memory, error) {
	var m Memory
	err := c.do(context.Background(), http.MethodGet, "/api/memory", nil, &m)
	return m, err
}

// Sessions lists a user's devices on the node.
func (c *Client) Sessions(user string) ([]Session, error) {
	var list []Session
	err := c.do(context.Background(), http.MethodGet, "/api/sessions?user="+url.QueryEscape(user), nil, &list)
	return list, err
}

// ClusterStatus returns the node's cluster status as raw JSON.
func (c *Client) ClusterStatus() (json.RawMessage, error) {
	var raw json.RawMessage
	err := c.do(context.Background(), http.MethodGet, "/api/cluster/status", nil, &raw)
	return raw, err
}

// Where asks the node for a user's primary and backup.
func (c *Client) Where(user string) (Where, error) {
	var w Where
	err := c.do(context.Background(), http.MethodGet, "/api/cluster/where?user="+url.QueryEscape(user), nil, &w)
	return w, err
}
