//! Who the client is, for per-client limits: the peer address, or behind configured trusted
//! proxies the right-most address in `X-Forwarded-For` that is not one of them; an IPv6 client
//! is its /64.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use actix_web::dev::ServiceRequest;
use actix_web::http::header::HeaderName;

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// An address or a CIDR block (`10.0.0.0/8`, `fd00::/8`, `192.168.1.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    address: IpAddr,
    prefix: u8,
}

/// Why a trusted proxy entry could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR block such as \"10.0.0.0/8\"")]
pub struct InvalidNetwork(String);

impl FromStr for IpNetwork {
    type Err = InvalidNetwork;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidNetwork(text.to_owned());
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| invalid())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(|_| invalid())?,
            None => max,
        };
        if prefix > max {
            return Err(invalid());
        }
        // Clients are compared as IPv4 when mapped (see `canonical`), so a mapped block is
        // kept as the IPv4 block it covers; a shorter prefix would reach beyond the mapped range.
        match address {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
                let prefix = prefix.checked_sub(96).ok_or_else(invalid)?;
                Ok(Self {
                    address: canonical(address),
                    prefix,
                })
            }
            _ => Ok(Self { address, prefix }),
        }
    }
}

impl IpNetwork {
    pub fn contains(&self, candidate: IpAddr) -> bool {
        match (self.address, canonical(candidate)) {
            (IpAddr::V4(network), IpAddr::V4(candidate)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(candidate) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(candidate)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(candidate) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack socket reports) as IPv4, so
/// one client has one address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .map(canonical)
}

/// Leading bits of an IPv6 address that name one client: a host is handed a whole /64 (SLAAC,
/// privacy addresses) and may use any address in it.
const IPV6_CLIENT_PREFIX: u32 = 64;

/// What `request`'s client is counted as by the per-client limits: its IPv4 address, or the /64
/// its IPv6 address is in, so a client cannot take another share by moving to another address
/// of its own.
pub(crate) fn client_key(request: &ServiceRequest, trusted: &[IpNetwork]) -> Option<IpAddr> {
    client_ip(request, trusted).map(|address| match address {
        IpAddr::V6(v6) => {
            let mask = u128::MAX << (128 - IPV6_CLIENT_PREFIX);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        v4 => v4,
    })
}

/// The client address of `request`. `X-Forwarded-For` is read only when the peer is a trusted
/// proxy; then the hops are walked from the right, skipping trusted proxies, and the first other
/// address is the client. A malformed hop ends the walk at the last trusted address, so a client
/// cannot pick its own identity by sending garbage.
fn client_ip(request: &ServiceRequest, trusted: &[IpNetwork]) -> Option<IpAddr> {
    let peer = canonical(request.peer_addr()?.ip());
    let is_trusted = |address: IpAddr| trusted.iter().any(|network| network.contains(address));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = request
        .headers()
        .get_all(&X_FORWARDED_FOR)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(address) = parse_hop(hop) else {
            break;
        };
        client = address;
        if !is_trusted(address) {
            break;
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn networks(entries: &[&str]) -> Vec<IpNetwork> {
        entries.iter().map(|entry| entry.parse().unwrap()).collect()
    }

    fn client(peer: &str, forwarded: Option<&str>, trusted: &[&str]) -> IpAddr {
        let mut request = TestRequest::default().peer_addr(peer.parse().unwrap());
        if let Some(forwarded) = forwarded {
            request = request.insert_header(("x-forwarded-for", forwarded));
        }
        client_ip(&request.to_srv_request(), &networks(trusted)).unwrap()
    }

    fn key(peer: &str) -> IpAddr {
        let request = TestRequest::default().peer_addr(peer.parse().unwrap());
        client_key(&request.to_srv_request(), &[]).unwrap()
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_an_ipv4_client_its_address() {
        let home = key("[2001:db8:1:2::1]:5000");
        assert_eq!(home, "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(key("[2001:db8:1:2:ffff:ffff:ffff:ffff]:5000"), home);
        assert_ne!(key("[2001:db8:1:3::1]:5000"), home);
        assert_eq!(
            key("192.0.2.1:5000"),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        assert_ne!(key("192.0.2.2:5000"), key("192.0.2.1:5000"));
        assert_eq!(
            key("[::ffff:192.0.2.1]:5000"),
            "192.0.2.1".parse::<IpAddr>().unwrap(),
            "a mapped IPv4 client keeps its own address"
        );
    }

    #[test]
    fn networks_parse_and_match() {
        let block: IpNetwork = "10.0.0.0/8".parse().unwrap();
        assert!(block.contains("10.200.3.4".parse().unwrap()));
        assert!(!block.contains("11.0.0.1".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.2.3".parse().unwrap()));
        let single: IpNetwork = "192.168.1.7".parse().unwrap();
        assert!(single.contains("192.168.1.7".parse().unwrap()));
        assert!(!single.contains("192.168.1.8".parse().unwrap()));
        let all: IpNetwork = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: IpNetwork = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "proxy",
            "10.0.0.0/x",
            "::/129",
            "::ffff:10.0.0.0/95",
        ] {
            assert!(bad.parse::<IpNetwork>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_proxy_written_as_a_mapped_address_is_that_ipv4_address() {
        let proxy: IpNetwork = "::ffff:10.0.0.5".parse().unwrap();
        assert_eq!(proxy, "10.0.0.5".parse().unwrap());
        assert!(proxy.contains("10.0.0.5".parse().unwrap()));
        assert!(proxy.contains("::ffff:10.0.0.5".parse().unwrap()));
        assert!(!proxy.contains("10.0.0.6".parse().unwrap()));
        let block: IpNetwork = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(block, "10.0.0.0/8".parse().unwrap());
        assert_eq!(
            client("10.0.0.6:443", Some("198.51.100.7"), &["::ffff:10.0.0.5"]),
            "10.0.0.6".parse::<IpAddr>().unwrap(),
            "another peer's X-Forwarded-For is not believed"
        );
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        assert_eq!(
            client("203.0.113.9:5000", Some("1.2.3.4"), &[]),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client("203.0.113.9:5000", Some("1.2.3.4"), &["10.0.0.0/8"]),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            client(
                "10.0.0.1:5000",
                Some("6.6.6.6, 1.2.3.4, 10.0.0.2"),
                &trusted
            ),
            "1.2.3.4".parse::<IpAddr>().unwrap(),
            "a spoofed left-most hop is not believed"
        );
        assert_eq!(
            client("10.0.0.1:5000", None, &trusted),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client("10.0.0.1:5000", Some("10.0.0.3"), &trusted),
            "10.0.0.3".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client(
                "10.0.0.1:5000",
                Some("1.2.3.4, garbage, 10.0.0.2"),
                &trusted
            ),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client("10.0.0.1:5000", Some("[2001:db8::1]:443"), &trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }
}
