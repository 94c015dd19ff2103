package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Flags of the resource-exhaustion modes (issue 13 §3):
//
//	flood   open -n TCP conns to -target, hold them -hold, report how many
//	        the server hung up on (ok: more than -cap stayed open)
//	get     plain HTTP GET of -target (a URL); ok: any HTTP answer
//	idle    open one TCP conn to each -target (comma-separated), send
//	        nothing; ok: one is still open after -hold
//	replay  POST the assertion in -dir to the token URL -target -n times
//	        over one keep-alive conn; ok: any 200
var (
	dosN       = flag.Int("n", 1, "flood: conns; replay: requests")
	dosCap     = flag.Int("cap", 0, "flood: the per-peer cap the server should enforce")
	dosHold    = flag.Duration("hold", 2*time.Second, "flood, idle: how long to hold the conns")
	dosTimeout = flag.Duration("timeout", 2*time.Minute, "flood, get, idle, replay: the whole run's bound")
)

func dos(ctx context.Context, o opts, out outcome) outcome {
	// These modes outlast main's 20 s per-attempt bound (10,000 replays).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), *dosTimeout)
	defer cancel()
	switch o.mode {
	case "flood":
		return flood(ctx, o, out)
	case "get":
		return get(ctx, o, out)
	case "idle":
		return idle(ctx, o, out)
	default:
		return replay(ctx, o, out)
	}
}

// closedWithin reports whether the server hung up on c before deadline.
func closedWithin(c net.Conn, deadline time.Time) bool {
	_ = c.SetReadDeadline(deadline)
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func flood(ctx context.Context, o opts, out outcome) outcome {
	var d net.Dialer
	conns := make([]net.Conn, 0, *dosN)
	dialErrs := 0
	for i := 0; i < *dosN; i++ {
		c, err := d.DialContext(ctx, "tcp", o.target)
		if err != nil {
			dialErrs++
			continue
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	deadline := time.Now().Add(*dosHold)
	res := make(chan bool, len(conns))
	for _, c := range conns {
		go func() { res <- closedWithin(c, deadline) }()
	}
	closed := 0
	for range conns {
		if <-res {
			closed++
		}
	}
	open := len(conns) - closed
	out.Stage = "conn"
	out.OK = open > *dosCap
	out.Detail = fmt.Sprintf("dialed %d, dial errors %d, closed by server %d, held open %d", len(conns), dialErrs, closed, open)
	out.Code, out.Message = "conn", out.Detail // shown in the matrix table
	return out
}

func get(ctx context.Context, o opts, out outcome) outcome {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.target, nil)
	if err != nil {
		out.Stage, out.Detail = "setup", err.Error()
		return out
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		out.Stage, out.Detail = "transport", err.Error()
		return out
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	out.OK, out.Stage, out.HTTPStatus, out.Body = true, "http", resp.StatusCode, strings.TrimSpace(string(body))
	return out
}

func idle(ctx context.Context, o opts, out outcome) outcome {
	var d net.Dialer
	deadline := time.Now().Add(*dosHold)
	targets := strings.Split(o.target, ",")
	conns := make([]net.Conn, len(targets))
	for i, t := range targets {
		c, err := d.DialContext(ctx, "tcp", t)
		if err != nil {
			out.Stage, out.Detail = "setup", err.Error()
			return out
		}
		defer c.Close()
		conns[i] = c
	}
	var still []string
	for i, c := range conns {
		if !closedWithin(c, deadline) {
			still = append(still, targets[i])
		}
	}
	out.Stage = "conn"
	out.OK = len(still) > 0
	out.Detail = fmt.Sprintf("%d of %d idle conns closed by the server within %s", len(targets)-len(still), len(targets), *dosHold)
	out.Code, out.Message = "conn", out.Detail // shown in the matrix table
	return out
}

func replay(ctx context.Context, o opts, out outcome) outcome {
	cfg, err := tlsConfig(o.dir)
	if err != nil {
		out.Stage, out.Detail = "setup", err.Error()
		return out
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {readOpt(o.dir, "assertion")},
		"scope":                 {o.scope},
	}.Encode()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg.Clone(), MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	codes := map[int]int{}
	transport := 0
	start := time.Now()
	for i := 0; i < *dosN && ctx.Err() == nil; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, o.target, strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := client.Do(req)
		if err != nil {
			transport++
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		codes[resp.StatusCode]++
		out.Body = strings.TrimSpace(string(body))
	}
	out.Stage, out.HTTPStatus = "http", 401
	out.OK = codes[http.StatusOK] > 0
	if len(codes) != 1 || codes[401] == 0 {
		out.HTTPStatus = 0
	}
	out.Detail = fmt.Sprintf("%d requests in %s: codes %v, transport errors %d", *dosN, time.Since(start).Round(time.Millisecond), codes, transport)
	return out
}
