//! Who the client is behind a reverse proxy: the `X-Forwarded-For` or `Forwarded` (RFC 7239)
//! header, whichever `forwarded_header` names (only that one: a proxy appends to one and
//! passes the other through from the client), believed only when the TCP peer is one of
//! `trusted_proxies`. The client is the nearest address in the chain that is not itself a
//! trusted proxy, so a client cannot name itself by sending the header: its own entries come
//! before the proxies' ones.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::config::ForwardedHeader;

/// Whether `ip` is one of the trusted proxies.
pub fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client's address: the peer itself, or, when the peer is a trusted proxy, the address
/// its header gives (port 0 when it gives none); the peer when it gives nothing usable.
pub fn client(
    trusted: &[IpNet],
    header: ForwardedHeader,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Option<SocketAddr> {
    let peer = peer?;
    if !is_trusted(trusted, peer.ip()) {
        return Some(peer);
    }
    let chain = match header {
        ForwardedHeader::XForwardedFor => x_forwarded_for(headers),
        ForwardedHeader::Forwarded => forwarded(headers),
    };
    // From the nearest hop outwards: the first one that is not a trusted proxy.
    let found = chain
        .iter()
        .rev()
        .find(|addr| !is_trusted(trusted, addr.ip()))
        .or(chain.first());
    Some(found.copied().unwrap_or(peer))
}

/// The comma-separated elements of every `name` header, in order.
fn elements(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|element| element.trim().to_string())
        .collect()
}

/// The addresses of `X-Forwarded-For`, client first.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<SocketAddr> {
    elements(headers, "x-forwarded-for")
        .iter()
        .filter_map(|v| address(v))
        .collect()
}

/// The `for=` addresses of `Forwarded`, client first.
fn forwarded(headers: &HeaderMap) -> Vec<SocketAddr> {
    elements(headers, "forwarded")
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
        let xff = ForwardedHeader::XForwardedFor;
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.9.9.9")]);
        assert_eq!(
            ip(client(&trusted, xff, proxy, &chain)),
            "203.0.113.9",
            "the nearest untrusted hop"
        );
        assert_eq!(
            ip(client(&trusted, xff, stranger, &chain)),
            "198.51.100.7",
            "a stranger's header is ignored"
        );
        assert_eq!(
            ip(client(&[], xff, proxy, &chain)),
            "10.1.2.3",
            "no trusted proxies: no header believed"
        );
        let rfc = headers(&[(
            "forwarded",
            r#"for=192.0.2.60;proto=https, for="[2001:db8::1]:4711""#,
        )]);
        assert_eq!(
            ip(client(&trusted, ForwardedHeader::Forwarded, proxy, &rfc)),
            "2001:db8::1"
        );
        assert_eq!(
            ip(client(&trusted, xff, proxy, &rfc)),
            "10.1.2.3",
            "the header not chosen is not read: the client may have sent it"
        );
        assert_eq!(
            ip(client(&trusted, xff, proxy, &headers(&[]))),
            "10.1.2.3",
            "no header: the peer"
        );
        let garbage = headers(&[("x-forwarded-for", "nonsense, ")]);
        assert_eq!(ip(client(&trusted, xff, proxy, &garbage)), "10.1.2.3");
    }
}
