//! Who the client is behind a reverse proxy: the `Forwarded` (RFC 7239) or `X-Forwarded-For`
//! header, believed only when the TCP peer is one of `trusted_proxies`. The client is the
//! nearest address in the chain that is not itself a trusted proxy, so a client cannot name
//! itself by sending the header: its own entry is the leftmost, behind the proxies' ones.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Whether `ip` is one of the trusted proxies.
pub fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client's address: the peer itself, or, when the peer is a trusted proxy, the address
/// its headers give (port 0 when they give none); the peer when they give nothing usable.
pub fn client(
    trusted: &[IpNet],
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Option<SocketAddr> {
    let peer = peer?;
    if !is_trusted(trusted, peer.ip()) {
        return Some(peer);
    }
    let chain = forwarded_for(headers);
    // From the nearest hop outwards: the first one that is not a trusted proxy.
    let found = chain
        .iter()
        .rev()
        .find(|addr| !is_trusted(trusted, addr.ip()))
        .or(chain.first());
    Some(found.copied().unwrap_or(peer))
}

/// The addresses of the `for=` chain (`Forwarded`) or `X-Forwarded-For`, client first.
fn forwarded_for(headers: &HeaderMap) -> Vec<SocketAddr> {
    let values = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let forwarded: Vec<SocketAddr> = values("forwarded")
        .iter()
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| address(value.trim().trim_matches('"')))
                    .flatten()
            })
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    values("x-forwarded-for")
        .iter()
        .filter_map(|v| address(v))
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]:4711` or `2001:db8::1`.
fn address(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0)))
        .or_else(|| {
            let inner = text.strip_prefix('[')?.strip_suffix(']')?;
            inner
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 0))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("header value"));
        }
        map
    }

    fn ip(addr: Option<SocketAddr>) -> String {
        addr.map(|a| a.ip().to_string()).unwrap_or_default()
    }

    #[test]
    fn only_a_trusted_peer_is_believed_and_only_for_the_hop_before_it() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let proxy = Some("10.1.2.3:5000".parse().expect("addr"));
        let stranger = Some("198.51.100.7:5000".parse().expect("addr"));
        let xff = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.9.9.9")]);
        assert_eq!(
            ip(client(&trusted, proxy, &xff)),
            "203.0.113.9",
            "the nearest untrusted hop"
        );
        assert_eq!(
            ip(client(&trusted, stranger, &xff)),
            "198.51.100.7",
            "a stranger's header is ignored"
        );
        assert_eq!(
            ip(client(&[], proxy, &xff)),
            "10.1.2.3",
            "no trusted proxies: no header believed"
        );
        let forwarded = headers(&[(
            "forwarded",
            r#"for=192.0.2.60;proto=https, for="[2001:db8::1]:4711""#,
        )]);
        assert_eq!(ip(client(&trusted, proxy, &forwarded)), "2001:db8::1");
        assert_eq!(
            ip(client(&trusted, proxy, &headers(&[]))),
            "10.1.2.3",
            "no header: the peer"
        );
        let garbage = headers(&[("x-forwarded-for", "nonsense, ")]);
        assert_eq!(ip(client(&trusted, proxy, &garbage)), "10.1.2.3");
    }
}
