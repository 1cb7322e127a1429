//! The Envoy pair's bootstrap configs, as pure functions.
//!
//! One Envoy per node: A in node-a's netns takes the client pod's plaintext
//! and opens mutual TLS 1.3 to B in node-b's netns, which forwards to the
//! server pod. Each side verifies the other's URI SAN, as Weft's tunnel does
//! (docs/security.md). Three listener pairs: L4 (`tcp_proxy`) for requests and
//! for bulk, and L7 (HTTP connection manager: HTTP/1.1 from the client,
//! HTTP/2 between the Envoys, HTTP/1.1 to the server).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use serde_json::{Value, json};

use super::envoy::CertFiles;

/// One side's TLS material and the peer identity it accepts.
pub struct Tls<'a> {
    pub ca: &'a Path,
    pub own: &'a CertFiles,
    pub peer_id: &'a str,
}

/// Where the pair listens and forwards; ports are the same on both sides.
pub struct Layout {
    /// Envoy A's address for the client pod (node-a's bridge address).
    pub a: Ipv4Addr,
    /// Envoy B's address for Envoy A (node-b's underlay address).
    pub b: Ipv4Addr,
    /// The server pod: its HTTP server and its sink.
    pub http: SocketAddrV4,
    pub sink: SocketAddrV4,
}

pub const L4_HTTP_PORT: u16 = 15101;
pub const L4_BULK_PORT: u16 = 15102;
pub const L7_PORT: u16 = 15201;

/// Envoy A: plaintext listeners for the client pod, mTLS clusters to B.
pub fn config_a(at: &Layout, tls: &Tls) -> Value {
    let peer = |port| SocketAddrV4::new(at.b, port);
    let mut l7_cluster = cluster("peer_l7", peer(L7_PORT), Some(upstream_tls(tls, &["h2"])));
    // HTTP/2 between the pair, one connection multiplexing every request.
    l7_cluster["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": { "http2_protocol_options": {} }
        }
    });
    bootstrap(
        vec![
            listener(
                "l4_http",
                SocketAddrV4::new(at.a, L4_HTTP_PORT),
                tcp_proxy("peer_l4_http"),
                None,
            ),
            listener(
                "l4_bulk",
                SocketAddrV4::new(at.a, L4_BULK_PORT),
                tcp_proxy("peer_l4_bulk"),
                None,
            ),
            listener(
                "l7",
                SocketAddrV4::new(at.a, L7_PORT),
                http_manager("peer_l7", "HTTP1"),
                None,
            ),
        ],
        vec![
            cluster(
                "peer_l4_http",
                peer(L4_HTTP_PORT),
                Some(upstream_tls(tls, &[])),
            ),
            cluster(
                "peer_l4_bulk",
                peer(L4_BULK_PORT),
                Some(upstream_tls(tls, &[])),
            ),
            l7_cluster,
        ],
    )
}

/// Envoy B: mTLS listeners for A (client certificate required and its SPIFFE
/// id checked), plaintext clusters to the server pod.
pub fn config_b(at: &Layout, tls: &Tls) -> Value {
    let own = |port| SocketAddrV4::new(at.b, port);
    bootstrap(
        vec![
            listener(
                "l4_http",
                own(L4_HTTP_PORT),
                tcp_proxy("server_http"),
                Some(downstream_tls(tls, &[])),
            ),
            listener(
                "l4_bulk",
                own(L4_BULK_PORT),
                tcp_proxy("server_sink"),
                Some(downstream_tls(tls, &[])),
            ),
            listener(
                "l7",
                own(L7_PORT),
                http_manager("server_http", "AUTO"),
                Some(downstream_tls(tls, &["h2"])),
            ),
        ],
        vec![
            cluster("server_http", at.http, None),
            cluster("server_sink", at.sink, None),
        ],
    )
}

fn bootstrap(listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({ "static_resources": { "listeners": listeners, "clusters": clusters } })
}

fn address(at: SocketAddrV4) -> Value {
    json!({ "socket_address": { "address": at.ip().to_string(), "port_value": at.port() } })
}

fn listener(name: &str, at: SocketAddrV4, filter: Value, tls: Option<Value>) -> Value {
    let mut chain = json!({ "filters": [filter] });
    if let Some(tls) = tls {
        chain["transport_socket"] = tls;
    }
    json!({ "name": name, "address": address(at), "filter_chains": [chain] })
}

fn tcp_proxy(cluster: &str) -> Value {
    json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": cluster,
            "cluster": cluster
        }
    })
}

fn http_manager(cluster: &str, codec: &str) -> Value {
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": cluster,
            "codec_type": codec,
            "route_config": {
                "virtual_hosts": [{
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": cluster } }]
                }]
            },
            "http_filters": [{
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                }
            }]
        }
    })
}

fn cluster(name: &str, to: SocketAddrV4, tls: Option<Value>) -> Value {
    let mut cluster = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": address(to) } }] }]
        }
    });
    if let Some(tls) = tls {
        cluster["transport_socket"] = tls;
    }
    cluster
}

/// TLS 1.3 only, our certificate, the Weft CA as the only root, and the
/// peer's SPIFFE id as the only accepted URI SAN.
fn common_tls(tls: &Tls, alpn: &[&str]) -> Value {
    let mut common = json!({
        "tls_params": {
            "tls_minimum_protocol_version": "TLSv1_3",
            "tls_maximum_protocol_version": "TLSv1_3"
        },
        "tls_certificates": [{
            "certificate_chain": { "filename": tls.own.cert.display().to_string() },
            "private_key": { "filename": tls.own.key.display().to_string() }
        }],
        "validation_context": {
            "trusted_ca": { "filename": tls.ca.display().to_string() },
            "match_typed_subject_alt_names": [
                { "san_type": "URI", "matcher": { "exact": tls.peer_id } }
            ]
        }
    });
    if !alpn.is_empty() {
        common["alpn_protocols"] = json!(alpn);
    }
    common
}

fn upstream_tls(tls: &Tls, alpn: &[&str]) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": common_tls(tls, alpn)
        }
    })
}

fn downstream_tls(tls: &Tls, alpn: &[&str]) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "common_tls_context": common_tls(tls, alpn)
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn layout() -> Layout {
        Layout {
            a: Ipv4Addr::new(10, 88, 1, 1),
            b: Ipv4Addr::new(10, 89, 0, 2),
            http: "10.88.2.13:8088".parse().unwrap(),
            sink: "10.88.2.13:9999".parse().unwrap(),
        }
    }

    fn files(name: &str) -> CertFiles {
        CertFiles {
            cert: PathBuf::from(format!("/x/{name}.crt")),
            key: PathBuf::from(format!("/x/{name}.key")),
        }
    }

    /// Every TLS context of a config, wherever it sits.
    fn tls_contexts(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Object(map) => {
                if map.get("name") == Some(&json!("envoy.transport_sockets.tls")) {
                    out.push(map["typed_config"].clone());
                }
                map.values().for_each(|v| tls_contexts(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| tls_contexts(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_hop_between_the_pair_is_mutual_tls_13_pinned_to_the_peer_id() {
        let (a, b) = (files("a"), files("b"));
        let ca = PathBuf::from("/x/ca.crt");
        let client = "spiffe://cluster.local/ns/shop/sa/frontend";
        let server = "spiffe://cluster.local/ns/shop/sa/reviews";
        let config_a = config_a(
            &layout(),
            &Tls {
                ca: &ca,
                own: &a,
                peer_id: server,
            },
        );
        let config_b = config_b(
            &layout(),
            &Tls {
                ca: &ca,
                own: &b,
                peer_id: client,
            },
        );
        for (config, peer, upstream) in [(&config_a, server, true), (&config_b, client, false)] {
            let mut contexts = Vec::new();
            tls_contexts(config, &mut contexts);
            assert_eq!(contexts.len(), 3, "{config:#}");
            for ctx in contexts {
                let common = &ctx["common_tls_context"];
                assert_eq!(
                    common["tls_params"]["tls_minimum_protocol_version"],
                    "TLSv1_3"
                );
                let sans = &common["validation_context"]["match_typed_subject_alt_names"];
                assert_eq!(
                    sans,
                    &json!([{ "san_type": "URI", "matcher": { "exact": peer } }])
                );
                assert_eq!(
                    common["validation_context"]["trusted_ca"]["filename"],
                    "/x/ca.crt"
                );
                let kind = ctx["@type"].as_str().unwrap();
                assert_eq!(kind.ends_with("UpstreamTlsContext"), upstream, "{kind}");
                if !upstream {
                    assert_eq!(ctx["require_client_certificate"], true);
                }
            }
        }
    }

    #[test]
    fn a_forwards_to_b_and_b_to_the_server_with_http2_between_them() {
        let (a, b) = (files("a"), files("b"));
        let ca = PathBuf::from("/x/ca.crt");
        let tls = |own| Tls {
            ca: &ca,
            own,
            peer_id: "spiffe://x/ns/y/sa/z",
        };
        let config_a = config_a(&layout(), &tls(&a));
        let config_b = config_b(&layout(), &tls(&b));
        let endpoint = |config: &Value, cluster: &str| {
            let clusters = config["static_resources"]["clusters"].as_array().unwrap();
            let c = clusters.iter().find(|c| c["name"] == cluster).unwrap();
            let addr = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"];
            format!(
                "{}:{}",
                addr["address"].as_str().unwrap(),
                addr["port_value"]
            )
        };
        assert_eq!(endpoint(&config_a, "peer_l4_http"), "10.89.0.2:15101");
        assert_eq!(endpoint(&config_a, "peer_l7"), "10.89.0.2:15201");
        assert_eq!(endpoint(&config_b, "server_http"), "10.88.2.13:8088");
        assert_eq!(endpoint(&config_b, "server_sink"), "10.88.2.13:9999");
        let clusters = config_a["static_resources"]["clusters"].as_array().unwrap();
        let l7 = clusters.iter().find(|c| c["name"] == "peer_l7").unwrap();
        assert!(l7.to_string().contains("http2_protocol_options"));
        assert!(l7.to_string().contains("\"h2\""));
        let listeners = config_a["static_resources"]["listeners"]
            .as_array()
            .unwrap();
        assert!(
            listeners
                .iter()
                .all(|l| l["address"]["socket_address"]["address"] == "10.88.1.1")
        );
    }
}
