//! The Envoy pair's bootstrap configs, as pure functions.
//!
//! One Envoy per node: A in node-a's netns takes the client pod's plaintext
//! and opens mutual TLS 1.3 to B in node-b's netns, which forwards to the
//! server pod. Each side verifies the other's URI SAN, as Weft's tunnel does
//! (docs/security.md). Four listener pairs: L4 (`tcp_proxy`) for requests and
//! for bulk, and L7 (HTTP connection manager, HTTP/2 between the Envoys) twice:
//! HTTP/1.1 from the client and to the server, and h2c from the client and to
//! the server — the protocol the app spoke, as Weft's L7 path forwards it.

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
    /// The server pod: its HTTP/1.1 server, its sink, and its echo server
    /// (which speaks h2c).
    pub http: SocketAddrV4,
    pub sink: SocketAddrV4,
    pub echo: SocketAddrV4,
}

pub const L4_HTTP_PORT: u16 = 15101;
pub const L4_BULK_PORT: u16 = 15102;
pub const L7_PORT: u16 = 15201;
pub const L7_H2_PORT: u16 = 15202;

/// Envoy A: plaintext listeners for the client pod, mTLS clusters to B.
pub fn config_a(at: &Layout, tls: &Tls) -> Value {
    let peer = |port| SocketAddrV4::new(at.b, port);
    // HTTP/2 between the pair, one connection multiplexing every request.
    let l7_cluster =
        |name, port| http2(cluster(name, peer(port), Some(upstream_tls(tls, &["h2"]))));
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
            listener(
                "l7_h2",
                SocketAddrV4::new(at.a, L7_H2_PORT),
                http_manager("peer_l7_h2", "HTTP2"),
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
            l7_cluster("peer_l7", L7_PORT),
            l7_cluster("peer_l7_h2", L7_H2_PORT),
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
            listener(
                "l7_h2",
                own(L7_H2_PORT),
                http_manager("server_echo_h2", "AUTO"),
                Some(downstream_tls(tls, &["h2"])),
            ),
        ],
        vec![
            cluster("server_http", at.http, None),
            cluster("server_sink", at.sink, None),
            // h2c to the server, as the client spoke.
            http2(cluster("server_echo_h2", at.echo, None)),
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

/// `cluster` speaking HTTP/2 (h2c when it has no TLS) to its endpoint.
fn http2(mut cluster: Value) -> Value {
    cluster["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": { "http2_protocol_options": {} }
        }
    });
    cluster
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
            echo: "10.88.2.13:8000".parse().unwrap(),
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
            assert_eq!(contexts.len(), 4, "{config:#}");
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
        assert_eq!(endpoint(&config_a, "peer_l7_h2"), "10.89.0.2:15202");
        assert_eq!(endpoint(&config_b, "server_echo_h2"), "10.88.2.13:8000");
        let cluster = |config: &Value, name: &str| {
            let clusters = config["static_resources"]["clusters"].as_array().unwrap();
            clusters
                .iter()
                .find(|c| c["name"] == name)
                .unwrap()
                .to_string()
        };
        for name in ["peer_l7", "peer_l7_h2"] {
            let c = cluster(&config_a, name);
            assert!(c.contains("http2_protocol_options"), "{c}");
            assert!(c.contains("\"h2\""), "{c}");
        }
        // To the server: HTTP/1.1 for the HTTP/1.1 pair, h2c for the h2 pair.
        assert!(!cluster(&config_b, "server_http").contains("http2_protocol_options"));
        assert!(cluster(&config_b, "server_echo_h2").contains("http2_protocol_options"));
        let codec = |config: &Value, listener: &str| {
            let listeners = config["static_resources"]["listeners"].as_array().unwrap();
            let l = listeners.iter().find(|l| l["name"] == listener).unwrap();
            l["filter_chains"][0]["filters"][0]["typed_config"]["codec_type"].clone()
        };
        assert_eq!(codec(&config_a, "l7"), "HTTP1");
        assert_eq!(codec(&config_a, "l7_h2"), "HTTP2");
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
