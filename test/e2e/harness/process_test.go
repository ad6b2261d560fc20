package harness

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestFreeAddrAvoidsTheEphemeralRange: FreeAddr's ports are outside the
// range the kernel takes outgoing connections' source ports from (so none
// of the test's own connections can take one before its process binds it),
// and no port is handed out twice.
func TestFreeAddrAvoidsTheEphemeralRange(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Skipf("no ephemeral port range to compare with: %v", err)
	}
	f := strings.Fields(string(b))
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if len(f) != 2 || err1 != nil || err2 != nil {
		t.Fatalf("ip_local_port_range %q", b)
	}
	seen := map[string]bool{}
	for range 500 {
		addr := FreeAddr(t)
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(p)
		if port >= lo && port <= hi {
			t.Fatalf("FreeAddr gave %s, in the ephemeral range %d-%d", addr, lo, hi)
		}
		if seen[p] {
			t.Fatalf("FreeAddr gave port %s twice", p)
		}
		seen[p] = true
	}
}
