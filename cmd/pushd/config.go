package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// fileConfig is the TOML config file. Every key has a default (see
// defaultFileConfig and pushd.example.toml) so that `pushd serve` runs with
// no file at all.
type fileConfig struct {
	Domain  string `toml:"domain"`
	DataDir string `toml:"data_dir"`

	pushFileConfig // [push] [apns] [fcm] [proxy], see component.go

	C2S struct {
		Listen               string   `toml:"listen"`
		TLSListen            string   `toml:"tls_listen"`
		RequireTLS           bool     `toml:"require_tls"`
		AllowPlainWithoutTLS bool     `toml:"allow_plain_without_tls"`
		CertFile             string   `toml:"cert_file"`
		KeyFile              string   `toml:"key_file"`
		ResumeTimeout        duration `toml:"resume_timeout"`
		PushResumeTimeout    duration `toml:"push_resume_timeout"`
		ResumeLocation       string   `toml:"resume_location"`
		MaxStanzaBytes       int64    `toml:"max_stanza_bytes"`
		MaxDepth             int      `toml:"max_depth"`
		RateLimit            float64  `toml:"rate_limit"`
		RateBurst            float64  `toml:"rate_burst"`
		MobileResources      []string `toml:"mobile_resources"`
	} `toml:"c2s"`

	Component struct {
		Listen string            `toml:"listen"`
		Accept []componentAccept `toml:"accept"`
	} `toml:"component"`

	PushTriggers struct {
		IncludeBody   bool     `toml:"include_body"`
		IncludeSender bool     `toml:"include_sender"`
		Coalesce      duration `toml:"coalesce"`
		DesktopIdle   duration `toml:"desktop_idle"`
	} `toml:"push_triggers"`

	Queue struct {
		MaxEntries int   `toml:"max_entries"`
		MaxBytes   int64 `toml:"max_bytes"`
	} `toml:"queue"`

	Storage struct {
		Sync string `toml:"sync"`
	} `toml:"storage"`

	Cluster clusterSection `toml:"cluster"`

	SIP sipSection `toml:"sip"`

	Admin struct {
		Listen string `toml:"listen"`
	} `toml:"admin"`

	Log struct {
		Level string `toml:"level"`
	} `toml:"log"`

	// sipClock replaces the SIP side's clock (tests only).
	sipClock func() time.Time
}

// componentAccept is one XEP-0114 component allowed to connect.
type componentAccept struct {
	Domain string `toml:"domain"`
	Secret string `toml:"secret"`
}

func defaultFileConfig() fileConfig {
	var c fileConfig
	c.Domain = "localhost"
	c.DataDir = "./data"
	c.C2S.Listen = "127.0.0.1:5222"
	c.C2S.RequireTLS = true
	c.C2S.ResumeTimeout = duration(300 * time.Second)
	c.C2S.PushResumeTimeout = duration(24 * time.Hour)
	c.PushTriggers.Coalesce = duration(2 * time.Second)
	c.PushTriggers.DesktopIdle = duration(300 * time.Second)
	c.Queue.MaxEntries = 10000
	c.Queue.MaxBytes = 64 << 20
	c.C2S.MaxStanzaBytes = 256 << 10
	c.C2S.MaxDepth = 32
	c.C2S.RateLimit = 2000
	c.C2S.RateBurst = 4000
	c.Component.Listen = "127.0.0.1:5347"
	c.Storage.Sync = "batch"
	c.Admin.Listen = "127.0.0.1:9090"
	c.Log.Level = "info"
	c.pushFileConfig = defaultPushFileConfig()
	c.SIP = defaultSIPSection()
	return c
}

// loadConfig reads path over the defaults; an empty path is the defaults.
func loadConfig(path string) (fileConfig, error) {
	c := defaultFileConfig()
	if path == "" {
		return c, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&c)
	if err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = strconv.Quote(k.String())
		}
		return c, fmt.Errorf("config %s: unknown key %s", path, strings.Join(keys, ", "))
	}
	// Relative paths in the file are relative to the file, so that a
	// config works whatever directory pushd is started from.
	base := filepath.Dir(path)
	for _, p := range []*string{&c.DataDir, &c.C2S.CertFile, &c.C2S.KeyFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	c.resolvePaths(base)
	return c, c.validate()
}

func (c fileConfig) validate() error {
	if c.Domain == "" {
		return fmt.Errorf("config: domain is empty")
	}
	if (c.C2S.CertFile == "") != (c.C2S.KeyFile == "") {
		return fmt.Errorf("config: c2s.cert_file and c2s.key_file go together")
	}
	for _, a := range c.Component.Accept {
		if a.Domain == "" || a.Secret == "" {
			return fmt.Errorf("config: component.accept needs domain and secret")
		}
	}
	if err := c.SIP.validate(); err != nil {
		return err
	}
	return c.pushFileConfig.validate(false)
}

// duration reads TOML strings such as "300s" or "24h".
type duration time.Duration

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

func (d duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }
