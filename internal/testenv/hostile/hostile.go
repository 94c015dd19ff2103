// Package hostile is what the hostile-peer suites (test/e2e on Docker,
// test/kube on pods) share about an attack's answer: the attacker's
// outcome line (test/e2e/attacker) and the refusals a gate may give.
package hostile

import (
	"fmt"
	"strings"
)

// The one generic answer of each gate: callers never learn which check
// failed (the reason is only in the CP log).
const (
	GenericUnauth   = "authentication required"
	GenericIdentity = "registration rejected"
	GenericOAuth    = `{"error":"invalid_client","error_description":"client authentication failed"}`
)

// Outcome is test/e2e/attacker's one JSON line. Stage says how far the
// attempt got: "transport" (refused before any application code answered:
// TLS handshake or connection), "token" (refused at the token endpoint
// while fetching a bearer for a later step), "rpc" (an RPC answered),
// "http" (the token endpoint answered).
type Outcome struct {
	Attack     string `json:"attack"`
	Mode       string `json:"mode"`
	OK         bool   `json:"ok"`
	Stage      string `json:"stage"`
	Code       string `json:"code,omitempty"`
	Message    string `json:"message,omitempty"`
	HTTPStatus int    `json:"http_status,omitempty"`
	Body       string `json:"body,omitempty"`
	Token      string `json:"token,omitempty"`
	Detail     string `json:"detail,omitempty"`
}

func (o Outcome) String() string {
	switch {
	case o.Stage == "transport":
		return "TLS refused: " + o.Message + o.Detail
	case o.HTTPStatus != 0:
		return fmt.Sprintf("HTTP %d %s", o.HTTPStatus, o.Body)
	default:
		return fmt.Sprintf("%s %q", o.Code, o.Message)
	}
}

// RefusedAtTLS accepts only failures that happen after the TCP connection
// was up (a TLS alert, or the server hanging up mid-handshake), never a
// dial failure, which would make the attack prove nothing.
func RefusedAtTLS(o Outcome) error {
	if o.OK || o.Stage != "transport" {
		return fmt.Errorf("want a TLS refusal, got stage %s %s", o.Stage, o)
	}
	msg := o.Message + o.Detail
	for _, s := range []string{"tls: ", "broken pipe", "connection reset", "EOF"} {
		if strings.Contains(msg, s) {
			return nil
		}
	}
	return fmt.Errorf("want a TLS refusal on an established connection, got %q", msg)
}

// RefusedRPC wants the RPC answered with code and (when not "") msg.
func RefusedRPC(code, msg string) func(Outcome) error {
	return func(o Outcome) error {
		if o.OK || o.Stage != "rpc" || o.Code != code || (msg != "" && o.Message != msg) {
			return fmt.Errorf("want %s %q, got stage %s %s", code, msg, o.Stage, o)
		}
		return nil
	}
}

// RefusedOAuth wants the token endpoint's HTTP status and exact body.
func RefusedOAuth(status int, body string) func(Outcome) error {
	return func(o Outcome) error {
		if o.OK || o.Stage != "http" || o.HTTPStatus != status || o.Body != body {
			return fmt.Errorf("want HTTP %d %s, got stage %s %s", status, body, o.Stage, o)
		}
		return nil
	}
}
