//! Spin's `[outbound_networking] block_networks` (runtime config): IP networks that
//! outbound HTTP may not connect to. Each entry is a network in CIDR notation
//! (`"10.0.0.0/8"`, host bits ignored) or the keyword `"private"`: every address that is
//! not globally reachable (loopback, RFC 1918, link-local and cloud metadata, shared,
//! unique-local, documentation and reserved ranges, per IANA's special-purpose address
//! registries).
//!
//! The check runs on the addresses a host name resolves to, just before connecting, and
//! the connection goes to an address that passed it: a name that resolves to a private
//! address cannot smuggle a request into the cluster's network (server-side request
//! forgery), whatever the `allowed_outbound_hosts` pattern allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The blocked networks of an app; empty (nothing blocked) unless the runtime config
/// lists some.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockedNetworks {
    networks: Vec<IpNet>,
    private: bool,
}

impl BlockedNetworks {
    /// Parses `block_networks` entries; the error names the entry and what was expected.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut blocked = BlockedNetworks::default();
        for entry in entries {
            blocked.add(entry)?;
        }
        Ok(blocked)
    }

    /// Adds one `block_networks` entry; the error names the entry and what was expected.
    pub fn add(&mut self, entry: &str) -> Result<(), String> {
        if entry == "private" {
            self.private = true;
            return Ok(());
        }
        let net: IpNet = entry.parse().map_err(|_| {
            format!("{entry:?} is neither an IP network in CIDR notation (like \"10.0.0.0/8\") nor \"private\"")
        })?;
        self.networks.push(net.trunc());
        Ok(())
    }

    /// True when nothing is blocked.
    pub fn is_empty(&self) -> bool {
        !self.private && self.networks.is_empty()
    }

    /// Whether a connection to `ip` is refused. An IPv4 address written as IPv6
    /// (`::ffff:10.0.0.1`, `::10.0.0.1`, or through the NAT64 well-known prefix
    /// `64:ff9b::10.0.0.1`, which a NAT64 gateway translates to it) is judged as the IPv4
    /// address too, so the IPv6 spelling is no way around an IPv4 entry.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        if self.private && !is_globally_reachable(ip) {
            return true;
        }
        if self.networks.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).is_some_and(|v4| self.is_blocked(IpAddr::V4(v4))),
            IpAddr::V4(_) => false,
        }
    }
}

/// The IPv4 address an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`) or
/// NAT64 well-known-prefix (`64:ff9b::a.b.c.d`, RFC 6052) IPv6 address stands for. `::`
/// and `::1` are IPv6's own unspecified and loopback addresses, not IPv4 ones.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if v6.is_unspecified() || v6.is_loopback() {
        return None;
    }
    if let [0x64, 0xff9b, 0, 0, 0, 0, ..] = v6.segments() {
        let [.., a, b, c, d] = v6.octets();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    v6.to_ipv4()
}

/// IPv4 ranges that are not globally reachable (IANA IPv4 Special-Purpose Address
/// Registry, "Globally Reachable: False"), plus multicast and the reserved 240/4.
const IPV4_NOT_GLOBAL: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network"
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private use
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // shared address space (carrier-grade NAT)
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local, cloud metadata services
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private use
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation (TEST-NET-1)
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private use
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation (TEST-NET-2)
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation (TEST-NET-3)
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, limited broadcast
];

/// Globally reachable exceptions inside [`IPV4_NOT_GLOBAL`]: the PCP and TURN anycast
/// addresses in 192.0.0.0/24.
const IPV4_GLOBAL_EXCEPTIONS: &[Ipv4Addr] =
    &[Ipv4Addr::new(192, 0, 0, 9), Ipv4Addr::new(192, 0, 0, 10)];

/// IPv6 ranges that are not globally reachable (IANA IPv6 Special-Purpose Address
/// Registry), plus multicast. IPv4-mapped addresses are judged by their IPv4 address.
const IPV6_NOT_GLOBAL: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 128), // unspecified
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1), 128), // loopback
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use IPv4/IPv6 translation
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64), // discard-only
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23), // IETF protocol assignments
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20), // documentation
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16), // segment routing (SRv6) SIDs
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7), // unique local
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8), // multicast
];

/// Globally reachable exceptions inside 2001::/23 (TEREDO's 2001::/32 is part of the
/// block and stays refused).
const IPV6_GLOBAL_EXCEPTIONS: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 1), 128), // port control protocol anycast
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 2), 128), // TURN anycast
    (Ipv6Addr::new(0x2001, 3, 0, 0, 0, 0, 0, 0), 32),  // AMT
    (Ipv6Addr::new(0x2001, 4, 0x112, 0, 0, 0, 0, 0), 48), // AS112-v6
    (Ipv6Addr::new(0x2001, 0x20, 0, 0, 0, 0, 0, 0), 28), // ORCHIDv2
    (Ipv6Addr::new(0x2001, 0x30, 0, 0, 0, 0, 0, 0), 28), // drone remote ID
];

/// Whether `ip` is a globally reachable unicast address: what `"private"` leaves open.
pub fn is_globally_reachable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            IPV4_GLOBAL_EXCEPTIONS.contains(&v4)
                || !IPV4_NOT_GLOBAL
                    .iter()
                    .any(|&(net, len)| v4_net(net, len).contains(&v4))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_globally_reachable(IpAddr::V4(v4));
            }
            let within = |list: &[(Ipv6Addr, u8)]| {
                list.iter()
                    .any(|&(net, len)| v6_net(net, len).contains(&v6))
            };
            within(IPV6_GLOBAL_EXCEPTIONS) || !within(IPV6_NOT_GLOBAL)
        }
    }
}

fn v4_net(addr: Ipv4Addr, len: u8) -> Ipv4Net {
    Ipv4Net::new(addr, len).expect("prefix lengths in the tables are at most 32")
}

fn v6_net(addr: Ipv6Addr, len: u8) -> Ipv6Net {
    Ipv6Net::new(addr, len).expect("prefix lengths in the tables are at most 128")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_blocks_every_address_that_is_not_globally_reachable() {
        // Proves "private" refuses loopback, RFC 1918, link-local (cloud metadata), shared,
        // reserved, documentation and IPv6 local ranges, in every spelling (NAT64's
        // included: a gateway would translate it to the private address), and leaves
        // public unicast addresses (and the global exceptions) open.
        let blocked = BlockedNetworks::parse(["private"]).unwrap();
        for refused in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.2.10",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.7",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:5",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "100::1",
            "2001:db8::1",
            "2001::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(blocked.is_blocked(ip(refused)), "{refused} must be refused");
        }
        for open in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "192.0.0.9",
            "100.128.0.1",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "2001:20::1",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
        ] {
            assert!(!blocked.is_blocked(ip(open)), "{open} must stay open");
        }
    }

    #[test]
    fn cidr_entries_block_their_network_in_either_spelling_and_nothing_else() {
        // Proves entries are truncated to their network, IPv4 entries also catch the
        // IPv4-mapped, IPv4-compatible and NAT64 IPv6 spellings, and a list without "private"
        // leaves other private ranges open.
        let blocked = BlockedNetworks::parse(["123.123.5.6/16", "2001:db8::/96"]).unwrap();
        assert!(blocked.is_blocked(ip("123.123.0.1")));
        assert!(blocked.is_blocked(ip("123.123.255.255")));
        assert!(blocked.is_blocked(ip("::ffff:123.123.1.1")));
        assert!(blocked.is_blocked(ip("::123.123.1.1")));
        assert!(blocked.is_blocked(ip("64:ff9b::7b7b:101")));
        assert!(blocked.is_blocked(ip("2001:db8::abcd")));
        assert!(!blocked.is_blocked(ip("123.124.0.1")));
        assert!(!blocked.is_blocked(ip("2001:db8:1::1")));
        assert!(!blocked.is_blocked(ip("10.0.0.1")));
        assert!(!blocked.is_blocked(ip("127.0.0.1")));
        assert!(!blocked.is_empty());
        assert!(BlockedNetworks::parse([]).unwrap().is_empty());
    }

    #[test]
    fn entries_that_are_no_network_are_refused_naming_the_entry() {
        // Proves a bare address, a bad prefix length, a name or a typo of "private" stops
        // start-up with a message that quotes the entry.
        for bad in [
            "10.0.0.1",
            "10.0.0.0/33",
            "example.com",
            "Private",
            "",
            "::1/129",
        ] {
            let e = BlockedNetworks::parse([bad]).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
