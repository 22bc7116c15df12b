//! Where webhooks may go: public unicast addresses only, unless the deployment allows private
//! ones (`WEBHOOKS_ALLOW_PRIVATE`, for tests and development). An endpoint's URL is chosen by
//! whoever holds the admin token, and the dispatcher runs inside the deployment's network: without
//! this check a URL could reach Postgres, Redis, a cloud metadata service or anything else only the
//! deployment can see (server-side request forgery).
//!
//! A host name is resolved by [`PublicResolver`], which the HTTP client uses for every connection
//! it opens: it refuses the whole answer if any address in it is not public, and the client then
//! connects only to the addresses it returned. So the address checked is the address connected to,
//! and a name that answers a public address to one lookup and a private one to the next (DNS
//! rebinding) gains nothing. An IP literal in the URL is never resolved, so [`check_url`] checks it
//! before the request.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Why an address is not public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, and local-use NAT64 `64:ff9b:1::/48`.
    Private,
    /// `100.64.0.0/10`, carrier-grade NAT.
    SharedCgnat,
    /// `169.254.0.0/16` (cloud metadata services live there), `fe80::/10`.
    LinkLocal,
    /// `fc00::/7`.
    UniqueLocal,
    /// `fec0::/10`, deprecated but still routed by some networks.
    SiteLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18.0.0/15`.
    Benchmarking,
    /// Everything else that is not global unicast: `192.0.0.0/24`, `240.0.0.0/4`, the
    /// IPv4-compatible `::/96`, the IETF assignments `2001::/23` (Teredo among them), and every
    /// IPv6 address outside `2000::/3` not named above.
    Reserved,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Unspecified => "unspecified",
            Class::Loopback => "loopback",
            Class::Private => "private",
            Class::SharedCgnat => "shared (carrier-grade NAT)",
            Class::LinkLocal => "link-local",
            Class::UniqueLocal => "unique local",
            Class::SiteLocal => "site-local",
            Class::Multicast => "multicast",
            Class::Broadcast => "broadcast",
            Class::Documentation => "documentation",
            Class::Benchmarking => "benchmarking",
            Class::Reserved => "reserved",
        })
    }
}

/// `None` for a public unicast address; otherwise what it is. IPv6 forms that carry an IPv4
/// address a packet ends up at (IPv4-mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`) are judged by that IPv4 address.
pub fn classify(ip: IpAddr) -> Option<Class> {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Class> {
    let [a, b, c, _] = ip.octets();
    let class = if a == 0 {
        Class::Unspecified
    } else if ip.is_loopback() {
        Class::Loopback
    } else if ip.is_private() {
        Class::Private
    } else if a == 100 && (b & 0b1100_0000) == 64 {
        Class::SharedCgnat
    } else if ip.is_link_local() {
        Class::LinkLocal
    } else if ip.is_documentation() {
        Class::Documentation
    } else if a == 198 && (b & 0b1111_1110) == 18 {
        Class::Benchmarking
    } else if ip.is_multicast() {
        Class::Multicast
    } else if ip.is_broadcast() {
        Class::Broadcast
    } else if (a == 192 && b == 0 && c == 0) || a >= 240 {
        Class::Reserved
    } else {
        return None;
    };
    Some(class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<Class> {
    let s = ip.segments();
    let embedded = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let class = if ip.is_unspecified() {
        Class::Unspecified
    } else if ip.is_loopback() {
        Class::Loopback
    } else if s[..6] == [0; 6] {
        // IPv4-compatible, deprecated since 2006 (RFC 4291).
        Class::Reserved
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded(s[6], s[7]));
    } else if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        Class::Private
    } else if s[0] == 0x2002 {
        return classify_v4(embedded(s[1], s[2]));
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Class::UniqueLocal
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Class::LinkLocal
    } else if (s[0] & 0xffc0) == 0xfec0 {
        Class::SiteLocal
    } else if (s[0] & 0xff00) == 0xff00 {
        Class::Multicast
    } else if (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] == 0x3fff && (s[1] & 0xf000) == 0) {
        Class::Documentation
    } else if (s[0] & 0xe000) != 0x2000 || (s[0] == 0x2001 && s[1] < 0x0200) {
        Class::Reserved
    } else {
        return None;
    };
    Some(class)
}

/// A webhook that would go to an address that is not public.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{host} is {addr}, a {class} address: webhooks go to public addresses only")]
pub struct Refused {
    pub host: String,
    pub addr: IpAddr,
    pub class: Class,
}

/// Refuses `addrs` (what `host` resolved to) unless every one is public.
pub fn check_all(host: &str, addrs: &[SocketAddr]) -> Result<(), Refused> {
    for addr in addrs {
        if let Some(class) = classify(addr.ip()) {
            return Err(Refused {
                host: host.to_owned(),
                addr: addr.ip(),
                class,
            });
        }
    }
    Ok(())
}

/// Refuses a URL whose host is a non-public IP literal (which the client connects to without
/// resolving). Host names are left to [`PublicResolver`].
pub fn check_url(url: &Url) -> Result<(), Refused> {
    let ip = match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(Host::Domain(_)) | None => return Ok(()),
    };
    match classify(ip) {
        Some(class) => Err(Refused {
            host: url.host_str().unwrap_or_default().to_owned(),
            addr: ip,
            class,
        }),
        None => Ok(()),
    }
}

/// The HTTP client's resolver when private addresses are not allowed: the system's resolver,
/// answering only when every address it found is public.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicResolver;

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            check_all(&host, &addrs)?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The reference: the IANA special-purpose registries as plain prefix tables, compared on the
    /// address as an integer.
    const V4_NOT_PUBLIC: &[(u32, u32)] = &[
        (0x0000_0000, 8),  // 0.0.0.0/8 this network
        (0x0a00_0000, 8),  // 10.0.0.0/8
        (0x6440_0000, 10), // 100.64.0.0/10
        (0x7f00_0000, 8),  // 127.0.0.0/8
        (0xa9fe_0000, 16), // 169.254.0.0/16
        (0xac10_0000, 12), // 172.16.0.0/12
        (0xc000_0000, 24), // 192.0.0.0/24
        (0xc000_0200, 24), // 192.0.2.0/24
        (0xc0a8_0000, 16), // 192.168.0.0/16
        (0xc612_0000, 15), // 198.18.0.0/15
        (0xc633_6400, 24), // 198.51.100.0/24
        (0xcb00_7100, 24), // 203.0.113.0/24
        (0xe000_0000, 4),  // 224.0.0.0/4 multicast
        (0xf000_0000, 4),  // 240.0.0.0/4 reserved, and the broadcast address
    ];

    /// Inside 2000::/3, the only global unicast space; everything outside it is refused.
    const V6_NOT_PUBLIC_IN_GLOBAL: &[(u128, u32)] = &[
        (0x2001_0000 << 96, 23), // 2001::/23 IETF protocol assignments
        (0x2001_0db8 << 96, 32), // 2001:db8::/32 documentation
        (0x3fff_0000 << 96, 20), // 3fff::/20 documentation
    ];

    fn in_prefix(addr: u128, base: u128, len: u32, bits: u32) -> bool {
        let shift = bits - len;
        (addr >> shift) == (base >> shift)
    }

    fn reference_v4(ip: u32) -> bool {
        V4_NOT_PUBLIC
            .iter()
            .any(|&(base, len)| in_prefix(u128::from(ip), u128::from(base), len, 32))
    }

    /// True when refused.
    fn reference_v6(ip: u128) -> bool {
        let low32 = (ip & 0xffff_ffff) as u32;
        if ip >> 32 == 0xffff {
            return reference_v4(low32); // ::ffff:0:0/96 IPv4-mapped
        }
        if ip >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
            return reference_v4(low32); // 64:ff9b::/96 NAT64
        }
        if ip >> 112 == 0x2002 {
            return reference_v4((ip >> 80) as u32); // 2002::/16 6to4
        }
        if ip >> 125 != 1 {
            return true; // outside 2000::/3
        }
        V6_NOT_PUBLIC_IN_GLOBAL
            .iter()
            .any(|&(base, len)| in_prefix(ip, base, len, 128))
    }

    /// An address near the edges of the special ranges as often as a uniformly random one.
    fn v4_addr() -> impl Strategy<Value = u32> {
        let near_edge = (
            0..V4_NOT_PUBLIC.len(),
            any::<u32>(),
            -2i64..=2,
            any::<bool>(),
        )
            .prop_map(|(index, host, delta, at_end)| {
                let (base, len) = V4_NOT_PUBLIC[index];
                let size = 1u64 << (32 - len);
                let edge = if at_end {
                    u64::from(base) + size
                } else {
                    u64::from(base)
                };
                let inside = u64::from(base) + u64::from(host) % size;
                let addr = if delta == 0 {
                    inside
                } else {
                    (edge as i64 + delta).rem_euclid(1 << 32) as u64
                };
                addr as u32
            });
        prop_oneof![any::<u32>(), near_edge]
    }

    fn v6_addr() -> impl Strategy<Value = u128> {
        let prefixes: &'static [(u128, u32)] = &[
            (0, 96),                      // ::/96
            (0xffff << 32, 96),           // ::ffff:0:0/96
            (0x0064_ff9b << 96, 96),      // 64:ff9b::/96
            (0x0064_ff9b_0001 << 80, 48), // 64:ff9b:1::/48
            (0x0100 << 112, 64),          // 100::/64
            (0x2001 << 112, 23),          // 2001::/23
            (0x2001_0200 << 96, 23),      // just after it
            (0x2001_0db8 << 96, 32),      // 2001:db8::/32
            (0x2002 << 112, 16),          // 2002::/16
            (0x2000 << 112, 3),           // 2000::/3
            (0x3fff << 112, 20),          // 3fff::/20
            (0x3fff_1000 << 96, 20),      // just after it
            (0xfc00 << 112, 7),           // fc00::/7
            (0xfe80 << 112, 10),          // fe80::/10
            (0xfec0 << 112, 10),          // fec0::/10
            (0xff00 << 112, 8),           // ff00::/8
        ];
        let in_prefix = (0..prefixes.len(), any::<u128>()).prop_map(move |(index, host)| {
            let (base, len) = prefixes[index];
            base | (host & (u128::MAX >> len))
        });
        let embedded = (v4_addr(), 0..3usize).prop_map(|(v4, form)| match form {
            0 => (0xffff << 32) | u128::from(v4),
            1 => (0x0064_ff9b << 96) | u128::from(v4),
            _ => (0x2002 << 112) | (u128::from(v4) << 80),
        });
        prop_oneof![any::<u128>(), in_prefix, embedded]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn ipv4_matches_the_reference(ip in v4_addr()) {
            let addr = Ipv4Addr::from(ip);
            prop_assert_eq!(classify(IpAddr::V4(addr)).is_some(), reference_v4(ip), "{}", addr);
        }

        #[test]
        fn ipv6_matches_the_reference(ip in v6_addr()) {
            let addr = Ipv6Addr::from(ip);
            prop_assert_eq!(classify(IpAddr::V6(addr)).is_some(), reference_v6(ip), "{}", addr);
        }

        #[test]
        fn a_mapped_address_is_judged_as_its_ipv4(ip in v4_addr()) {
            let v4 = Ipv4Addr::from(ip);
            prop_assert_eq!(classify(IpAddr::V6(v4.to_ipv6_mapped())), classify(IpAddr::V4(v4)));
        }

        #[test]
        fn a_refused_resolution_names_the_first_bad_address(ips in proptest::collection::vec(v4_addr(), 1..5)) {
            let addrs: Vec<SocketAddr> = ips.iter().map(|&ip| SocketAddr::from((Ipv4Addr::from(ip), 443))).collect();
            let first_bad = ips.iter().copied().find(|&ip| reference_v4(ip));
            match (check_all("hooks.example", &addrs), first_bad) {
                (Ok(()), None) => {}
                (Err(refused), Some(bad)) => prop_assert_eq!(refused.addr, IpAddr::V4(Ipv4Addr::from(bad))),
                (result, expected) => prop_assert!(false, "{:?} for {:?}, expected {:?}", result, addrs, expected),
            }
        }
    }

    #[test]
    fn named_addresses() {
        let cases: &[(&str, Option<Class>)] = &[
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("0.0.0.0", Some(Class::Unspecified)),
            ("127.0.0.1", Some(Class::Loopback)),
            ("10.1.2.3", Some(Class::Private)),
            ("172.31.255.255", Some(Class::Private)),
            ("172.32.0.0", None),
            ("192.168.1.1", Some(Class::Private)),
            ("100.64.0.1", Some(Class::SharedCgnat)),
            ("100.128.0.1", None),
            ("169.254.169.254", Some(Class::LinkLocal)),
            ("224.0.0.1", Some(Class::Multicast)),
            ("255.255.255.255", Some(Class::Broadcast)),
            ("2606:4700:4700::1111", None),
            ("::", Some(Class::Unspecified)),
            ("::1", Some(Class::Loopback)),
            ("::ffff:127.0.0.1", Some(Class::Loopback)),
            ("::ffff:10.0.0.1", Some(Class::Private)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Class::Reserved)),
            ("64:ff9b::a9fe:a9fe", Some(Class::LinkLocal)),
            ("64:ff9b::808:808", None),
            ("2002:7f00:1::", Some(Class::Loopback)),
            ("fd00::1", Some(Class::UniqueLocal)),
            ("fe80::1", Some(Class::LinkLocal)),
            ("ff02::1", Some(Class::Multicast)),
            ("2001:db8::1", Some(Class::Documentation)),
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                Some(Class::Reserved),
            ),
        ];
        for (text, expected) in cases {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(classify(ip), *expected, "{text}");
        }
    }

    #[test]
    fn literal_hosts_are_checked_and_names_are_left_to_the_resolver() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/",
            "https://[::ffff:169.254.169.254]/latest",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://10.0.0.1/",
        ] {
            let url = Url::parse(url).unwrap();
            assert!(check_url(&url).is_err(), "{url}");
        }
        for url in [
            "https://8.8.8.8/",
            "https://hooks.example/",
            "http://localhost/",
        ] {
            let url = Url::parse(url).unwrap();
            assert!(check_url(&url).is_ok(), "{url}");
        }
        let refused = check_url(&Url::parse("http://169.254.169.254/").unwrap()).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "169.254.169.254 is 169.254.169.254, a link-local address: webhooks go to public addresses only"
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_with_a_private_address() {
        let err = PublicResolver
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .unwrap();
        let refused = err.downcast_ref::<Refused>().unwrap();
        assert_eq!(refused.class, Class::Loopback);
    }
}
