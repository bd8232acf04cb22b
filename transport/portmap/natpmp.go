package portmap

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	natpmp "github.com/jackpal/go-nat-pmp"
)

// natpmpClient speaks NAT-PMP (RFC 6886) to one gateway through
// github.com/jackpal/go-nat-pmp. That library takes no context: each
// request is bounded by the timeout of the context's deadline (at most
// timeout), and it reads answers into a fixed 16-byte buffer.
type natpmpClient struct {
	gateway netip.Addr
	local   netip.Addr
	timeout time.Duration // per request, when ctx has no nearer deadline
}

func (c *natpmpClient) name() Protocol { return NATPMP }

func (c *natpmpClient) client(ctx context.Context) *natpmp.Client {
	t := c.timeout
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d < t {
			t = max(d, time.Millisecond)
		}
	}
	var local net.IP
	if c.local.IsValid() {
		local = net.IP(c.local.AsSlice())
	}
	return natpmp.NewClientWithLocalAndTimeout(net.IP(c.gateway.AsSlice()), local, t)
}

func (c *natpmpClient) probe(ctx context.Context) (netip.Addr, error) {
	r, err := c.client(ctx).GetExternalAddress()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("portmap: NAT-PMP: %w", err)
	}
	return netip.AddrFrom4(r.ExternalIPAddress), nil
}

func (c *natpmpClient) mapPort(ctx context.Context, internal, suggested uint16, lifetime time.Duration) (mapping, error) {
	ext, err := c.probe(ctx)
	if err != nil {
		return mapping{}, err
	}
	if !ext.IsValid() || ext.IsUnspecified() {
		return mapping{}, fmt.Errorf("portmap: NAT-PMP: gateway has no external address (%s)", ext)
	}
	r, err := c.client(ctx).AddPortMapping("udp", int(internal), int(suggested), int(lifetimeSeconds(lifetime)&0x7fffffff))
	if err != nil {
		return mapping{}, fmt.Errorf("portmap: NAT-PMP map: %w", err)
	}
	if r.MappedExternalPort == 0 || r.PortMappingLifetimeInSeconds == 0 {
		return mapping{}, fmt.Errorf("portmap: NAT-PMP map: granted port %d for %d s", r.MappedExternalPort, r.PortMappingLifetimeInSeconds)
	}
	return mapping{
		proto:    NATPMP,
		external: netip.AddrPortFrom(ext, r.MappedExternalPort),
		lifetime: time.Duration(r.PortMappingLifetimeInSeconds) * time.Second,
		internal: internal,
	}, nil
}

func (c *natpmpClient) unmap(ctx context.Context, m mapping) error {
	// RFC 6886 section 3.4: lifetime 0 and suggested external port 0
	// delete the mapping of the internal port.
	if _, err := c.client(ctx).AddPortMapping("udp", int(m.internal), 0, 0); err != nil {
		return fmt.Errorf("portmap: NAT-PMP delete: %w", err)
	}
	return nil
}
