//! The client's address, as far as the gateway can trust it.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// Behind `proxy_hops` trusted proxies, each appending to `X-Forwarded-For`, it is the entry that
/// many places from the right; entries further left were written by the client and prove nothing.
/// Without trusted proxies the header is ignored and the peer address is the client.
pub fn client_ip(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    proxy_hops: usize,
) -> Option<IpAddr> {
    if proxy_hops > 0 {
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        if let Some(index) = forwarded.len().checked_sub(proxy_hops) {
            if let Ok(ip) = forwarded[index].parse() {
                return Some(ip);
            }
        }
    }
    peer.map(|addr| addr.ip())
}
