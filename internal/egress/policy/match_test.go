package policy

import (
	"net/netip"
	"testing"
)

func mustCompile(t *testing.T, yml string) *Matcher {
	t.Helper()
	p, err := Parse([]byte(yml))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	m, err := Compile(p)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return m
}

const testPolicy = `
defaults: false
allow:
  - name: example
    host: example.com
  - name: wild
    host: "*.svc.test"
    ports: [443]
  - name: lan
    host: 10.1.0.0/16
  - name: v6
    host: "2001:db8::/32"
    ports: [22]
  - name: api-read
    host: api.test
    methods: [get, HEAD]
    paths: [/v1/items]
    intercept: true
  - name: api-regex
    host: api.test
    methods: [POST]
    path_regex: ['^/v1/jobs/[0-9]+/run$']
    intercept: true
  - name: plain-only
    host: plain.test
    methods: [GET]
  - name: ws
    host: ws.test
    websocket: true
  - name: nows
    host: nows.test
deny:
  - name: bad-sub
    host: evil.svc.test
  - name: lan-hole
    host: 10.1.2.0/24
  - name: api-admin
    host: api.test
    paths: [/v1/items/admin]
    intercept: true
  - name: ssh-only
    host: example.com
    ports: [22]
`

func TestDecideTable(t *testing.T) {
	m := mustCompile(t, testPolicy)
	ip := netip.MustParseAddr
	cases := []struct {
		name      string
		req       Request
		allowed   bool
		intercept bool
		rule      string
	}{
		{"exact any port", Request{Host: "example.com", Port: 8443}, true, false, "example"},
		{"exact case and dot", Request{Host: "EXAMPLE.com.", Port: 443}, true, false, "example"},
		{"exact not subdomain", Request{Host: "www.example.com", Port: 443}, false, false, "default-deny"},
		{"deny wins on port", Request{Host: "example.com", Port: 22}, false, false, "ssh-only"},
		{"wildcard sub", Request{Host: "a.svc.test", Port: 443}, true, false, "wild"},
		{"wildcard deep", Request{Host: "a.b.svc.test", Port: 443}, true, false, "wild"},
		{"wildcard not apex", Request{Host: "svc.test", Port: 443}, false, false, "default-deny"},
		{"wildcard no suffix trick", Request{Host: "evilsvc.test", Port: 443}, false, false, "default-deny"},
		{"wildcard port scoped", Request{Host: "a.svc.test", Port: 80}, false, false, "default-deny"},
		{"deny beats wildcard", Request{Host: "evil.svc.test", Port: 443}, false, false, "bad-sub"},
		{"cidr literal", Request{Host: "10.1.9.9", Port: 5432}, true, false, "lan"},
		{"cidr deny hole", Request{Host: "10.1.2.3", Port: 5432}, false, false, "lan-hole"},
		{"cidr outside", Request{Host: "10.2.0.1", Port: 80}, false, false, "default-deny"},
		{"name resolving into denied cidr", Request{Host: "example.com", IP: ip("10.1.2.7"), Port: 443}, false, false, "lan-hole"},
		{"v4-mapped literal", Request{Host: "::ffff:10.1.2.3", Port: 80}, false, false, "lan-hole"},
		{"v6 cidr port", Request{Host: "[2001:db8::1]", Port: 22}, true, false, "v6"},
		{"v6 cidr wrong port", Request{Host: "2001:db8::1", Port: 443}, false, false, "default-deny"},
		{"tunnel to method rule intercepts", Request{Host: "api.test", Port: 443}, true, true, "api-read"},
		{"GET allowed path", Request{Host: "api.test", Port: 443, Method: "GET", Path: "/v1/items/42"}, true, false, "api-read"},
		{"HEAD exact prefix", Request{Host: "api.test", Port: 443, Method: "HEAD", Path: "/v1/items"}, true, false, "api-read"},
		{"prefix is segment aware", Request{Host: "api.test", Port: 443, Method: "GET", Path: "/v1/itemsX"}, false, false, "default-deny"},
		{"dot segments cleaned", Request{Host: "api.test", Port: 443, Method: "GET", Path: "/v1/items/../secret"}, false, false, "default-deny"},
		{"POST denied", Request{Host: "api.test", Port: 443, Method: "POST", Path: "/v1/items/1"}, false, false, "default-deny"},
		{"other path denied", Request{Host: "api.test", Port: 443, Method: "GET", Path: "/v2/items"}, false, false, "default-deny"},
		{"http deny wins", Request{Host: "api.test", Port: 443, Method: "GET", Path: "/v1/items/admin/x"}, false, false, "api-admin"},
		{"regex allows", Request{Host: "api.test", Port: 443, Method: "POST", Path: "/v1/jobs/17/run"}, true, false, "api-regex"},
		{"regex refuses", Request{Host: "api.test", Port: 443, Method: "POST", Path: "/v1/jobs/x/run"}, false, false, "default-deny"},
		{"plain http method rule", Request{Host: "plain.test", Port: 80, Method: "GET", Path: "/"}, true, false, "plain-only"},
		{"method rule without intercept gives no tunnel", Request{Host: "plain.test", Port: 443}, false, false, "default-deny"},
		{"websocket allowed", Request{Host: "ws.test", Port: 80, Method: "GET", Path: "/", WebSocket: true}, true, false, "ws"},
		{"websocket refused", Request{Host: "nows.test", Port: 80, Method: "GET", Path: "/", WebSocket: true}, false, false, "nows"},
		{"non-websocket on nows", Request{Host: "nows.test", Port: 80, Method: "GET", Path: "/"}, true, false, "nows"},
		{"dns allowed name", Request{Host: "a.svc.test"}, true, false, "wild"},
		{"dns port-scoped deny keeps name", Request{Host: "example.com"}, true, false, "example"},
		{"dns denied name", Request{Host: "evil.svc.test"}, false, false, "bad-sub"},
		{"dns unknown", Request{Host: "nowhere.test"}, false, false, "default-deny"},
		{"dns method-rule host resolves", Request{Host: "api.test"}, true, false, "api-read"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := m.Decide(tc.req, nil)
			if d.Allowed != tc.allowed || d.Intercept != tc.intercept || d.Rule.String() != tc.rule {
				t.Fatalf("Decide(%+v) = allowed %v intercept %v rule %q (%s); want %v %v %q",
					tc.req, d.Allowed, d.Intercept, d.Rule, d.Reason, tc.allowed, tc.intercept, tc.rule)
			}
		})
	}
}

func TestTunnelHTTPDenyWithoutInterceptFailsClosed(t *testing.T) {
	m := mustCompile(t, `
defaults: false
allow: [{host: x.test}]
deny: [{name: no-post, host: x.test, methods: [POST]}]
`)
	if d := m.Decide(Request{Host: "x.test", Port: 443}, nil); d.Allowed || d.Rule.Name != "no-post" {
		t.Fatalf("tunnel = %+v, want denied by no-post", d)
	}
	// Visible HTTP is decided per request.
	if d := m.Decide(Request{Host: "x.test", Port: 80, Method: "GET", Path: "/"}, nil); !d.Allowed {
		t.Fatalf("plain GET = %+v, want allowed", d)
	}
	if d := m.Decide(Request{Host: "x.test", Port: 80, Method: "POST", Path: "/"}, nil); d.Allowed {
		t.Fatalf("plain POST = %+v, want denied", d)
	}
}

func TestHostLevelAllowWithInterceptDenyIntercepts(t *testing.T) {
	m := mustCompile(t, `
defaults: false
allow: [{name: all, host: x.test}]
deny: [{name: no-post, host: x.test, methods: [POST], intercept: true}]
`)
	d := m.Decide(Request{Host: "x.test", Port: 443}, nil)
	if !d.Allowed || !d.Intercept || d.Rule.Name != "all" {
		t.Fatalf("tunnel = %+v, want allowed with interception by all", d)
	}
}

func TestDefaults(t *testing.T) {
	on := mustCompile(t, `allow: []`)
	off := mustCompile(t, `defaults: false`)
	for _, tc := range []struct {
		host string
		port uint16
	}{
		{"registry.npmjs.org", 443}, {"pypi.org", 443}, {"files.pythonhosted.org", 443},
		{"proxy.golang.org", 443}, {"crates.io", 443}, {"rubygems.org", 443},
		{"repo1.maven.org", 443}, {"deb.debian.org", 80}, {"archive.ubuntu.com", 80},
		{"dl-cdn.alpinelinux.org", 443}, {"api.anthropic.com", 443}, {"statsig.anthropic.com", 443},
		{"sentry.io", 443}, {"api.openai.com", 443}, {"github.com", 22}, {"github.com", 443},
		{"raw.githubusercontent.com", 443}, {"gitlab.com", 22}, {"bitbucket.org", 443},
	} {
		d := on.Decide(Request{Host: tc.host, Port: tc.port}, nil)
		if !d.Allowed || d.Rule.List != ListDefault || d.Rule.Name == "" {
			t.Errorf("defaults on: %s:%d = %+v, want allowed by a default rule", tc.host, tc.port, d)
		}
		if d := off.Decide(Request{Host: tc.host, Port: tc.port}, nil); d.Allowed {
			t.Errorf("defaults off: %s:%d = %+v, want denied", tc.host, tc.port, d)
		}
	}
	for _, tc := range []struct {
		host string
		port uint16
	}{{"api.anthropic.com", 80}, {"api.anthropic.com", 22}, {"raw.githubusercontent.com", 22}, {"example.com", 443}} {
		if d := on.Decide(Request{Host: tc.host, Port: tc.port}, nil); d.Allowed {
			t.Errorf("defaults on: %s:%d = %+v, want denied", tc.host, tc.port, d)
		}
	}
}

func TestDenyBeatsDefaults(t *testing.T) {
	m := mustCompile(t, `deny: [{name: no-gh, host: github.com}]`)
	if d := m.Decide(Request{Host: "github.com", Port: 443}, nil); d.Allowed || d.Rule.Name != "no-gh" {
		t.Fatalf("= %+v, want denied by no-gh", d)
	}
}

func TestUserRuleAttributedBeforeDefaults(t *testing.T) {
	m := mustCompile(t, `allow: [{host: github.com}]`)
	d := m.Decide(Request{Host: "github.com", Port: 443}, nil)
	if d.Rule.List != ListAllow || d.Rule.Index != 0 || d.Rule.String() != "allow[0]" {
		t.Fatalf("rule = %+v (%s), want allow[0]", d.Rule, d.Rule)
	}
}

func TestDeniesIP(t *testing.T) {
	m := mustCompile(t, testPolicy+"  - {name: meta, host: 169.254.169.254}\n  - {name: db, host: 192.0.2.0/24, ports: [5432]}\n")
	for _, tc := range []struct {
		ip   string
		port uint16
		rule string
	}{{"169.254.169.254", 80, "meta"}, {"::ffff:169.254.169.254", 80, "meta"}, {"10.1.2.200", 443, "lan-hole"}, {"192.0.2.1", 5432, "db"}, {"192.0.2.1", 443, ""}, {"10.1.3.1", 443, ""}} {
		ref, denied := m.DeniesIP(netip.MustParseAddr(tc.ip), tc.port)
		if denied != (tc.rule != "") || denied && ref.Name != tc.rule {
			t.Errorf("DeniesIP(%s, %d) = %v %v, want rule %q", tc.ip, tc.port, ref, denied, tc.rule)
		}
	}
}
