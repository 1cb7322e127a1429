//! L7 routing end to end (issue 14): real curl in lab pods, HTTP parsed by
//! the source node's agent, each request sent by the Service's HTTPRoute to
//! an endpoint it chose, through the mTLS tunnel; the lab's echo servers say
//! which pod answered and what they received.

use anyhow::Result;
use lab::MeshLab;
use lab::http::{curl, curl_many, pods_of};

/// The `reviews` Service (examples/mesh.yaml): its route sends `x-canary:
/// true` to reviews-v2, the rest 90/10 to reviews-v1/reviews-v2.
const REVIEWS: &str = "http://10.96.0.20:9080";

fn is_v2(pod: &str) -> bool {
    pod.starts_with("reviews-v2-")
}

fn is_v1(pod: &str) -> bool {
    pod.starts_with("reviews-v1-")
}

#[test]
fn a_header_match_and_a_weighted_split_route_each_request() -> Result<()> {
    let mesh = MeshLab::start()?;
    let client = mesh.pod("frontend-7d9f-a")?;

    let canary = curl(
        client,
        &["-H", "x-canary: true", &format!("{REVIEWS}/ratings?x=1")],
    )?;
    assert_eq!(canary.status, 200, "{canary:?}");
    let echo = canary.echo()?;
    assert!(is_v2(echo["pod"].as_str().unwrap_or_default()), "{echo}");
    assert_eq!(echo["path"], "/ratings?x=1");
    assert_eq!(
        echo["headers"]["host"], "10.96.0.20:9080",
        "Host passes unchanged"
    );
    assert!(
        echo["headers"]["x-request-id"]
            .as_str()
            .is_some_and(|id| id.len() == 36),
        "x-request-id added: {echo}"
    );

    // h2c with prior knowledge is forwarded as HTTP/2, :authority unchanged.
    let h2 = curl(
        client,
        &[
            "--http2-prior-knowledge",
            "-H",
            "x-canary: true",
            &format!("{REVIEWS}/h2"),
        ],
    )?;
    let echo = h2.echo()?;
    assert!(is_v2(echo["pod"].as_str().unwrap_or_default()), "{echo}");
    assert_eq!(echo["version"], "HTTP/2.0", "{echo}");
    assert_eq!(echo["authority"], "10.96.0.20:9080", "{echo}");

    // A chunked upload behind `Expect: 100-continue` streams through whole.
    let body = "x".repeat(100 * 1024);
    let up = curl(
        client,
        &[
            "-H",
            "Expect: 100-continue",
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "--data-binary",
            &body,
            &format!("{REVIEWS}/upload"),
        ],
    )?;
    let echo = up.echo()?;
    assert_eq!(echo["body_bytes"], 100 * 1024, "{echo}");
    assert_eq!(
        echo["headers"]["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );

    // 2,000 requests on kept-alive connections: a χ² test of the 90/10 split
    // (1 degree of freedom; 10.83 is p = 0.001).
    let mut pods = Vec::new();
    for _ in 0..4 {
        pods.extend(pods_of(&curl_many(
            client,
            &format!("{REVIEWS}/"),
            500,
            &[],
        )?));
    }
    let v1 = pods.iter().filter(|p| is_v1(p)).count() as f64;
    let v2 = pods.iter().filter(|p| is_v2(p)).count() as f64;
    assert_eq!(
        v1 + v2,
        2000.0,
        "every request answered by reviews: {pods:?}"
    );
    let (e1, e2) = (1800.0, 200.0);
    let chi2 = (v1 - e1).powi(2) / e1 + (v2 - e2).powi(2) / e2;
    assert!(chi2 < 10.83, "v1 {v1}, v2 {v2}: χ² {chi2:.2}");
    // Both reviews-v1 pods (one per node) take a share: per-request balancing.
    let v1_pods: std::collections::BTreeSet<_> = pods.iter().filter(|p| is_v1(p)).collect();
    assert_eq!(v1_pods.len(), 2, "{v1_pods:?}");
    Ok(())
}

/// Replaces the example's reviews route with `routes` (YAML documents).
fn set_routes(mesh: &mut MeshLab, routes: &str) -> Result<()> {
    mesh.config.remove_all("HTTPRoute", "shop");
    mesh.config.add_yaml(routes)?;
    if let Err(e) = mesh.apply_config() {
        let path = mesh.config.path().to_string_lossy().into_owned();
        let check = mesh.agent_cli("node-a", &["config", "validate", &path])?;
        anyhow::bail!(
            "{e}: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    Ok(())
}

/// An HTTPRoute on the reviews Service named `name`, created at `created`,
/// with `rules` (YAML, indented for `spec.rules`).
fn route(name: &str, created: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
  namespace: shop
  creationTimestamp: \"{created}\"
spec:
  parentRefs:
    - group: \"\"
      kind: Service
      name: reviews
      port: 9080
  rules:
{rules}"
    )
}

/// A rule matching `matches` (YAML list items at 8 spaces) sent to `backend`.
fn rule(matches: &str, backend: &str) -> String {
    format!(
        "    - matches:
{matches}
      backendRefs:
        - name: {backend}
          port: 9080
"
    )
}

fn path(kind: &str, value: &str) -> String {
    format!("        - path:\n            type: {kind}\n            value: \"{value}\"")
}

/// Which reviews version answered `args` from the frontend: "v1", "v2", or
/// the status code when not 200.
fn version(mesh: &MeshLab, args: &[&str]) -> Result<String> {
    let reply = curl(mesh.pod("frontend-7d9f-a")?, args)?;
    if reply.status != 200 {
        return Ok(reply.status.to_string());
    }
    let pod = reply.pod()?;
    Ok(if is_v1(&pod) {
        "v1".into()
    } else if is_v2(&pod) {
        "v2".into()
    } else {
        pod
    })
}

#[test]
fn every_match_type_and_gateway_api_precedence() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    let method_and_path = format!("{}\n          method: POST", path("PathPrefix", "/m"));
    let header_and_query = format!(
        "{}\n          headers:\n            - name: x-v\n              value: two\n          queryParams:\n            - name: v\n              value: \"2\"",
        path("PathPrefix", "/h")
    );
    let header_regex = format!(
        "{}\n          headers:\n            - type: RegularExpression\n              name: x-v\n              value: \"t.o\"",
        path("PathPrefix", "/hr")
    );
    let rules = [
        rule(&path("Exact", "/exact"), "reviews-v2"),
        rule(&path("PathPrefix", "/prefix"), "reviews-v1"),
        rule(&path("PathPrefix", "/prefix/deeper"), "reviews-v2"),
        rule(&path("RegularExpression", "/re/[0-9]+"), "reviews-v2"),
        rule(&path("PathPrefix", "/m"), "reviews-v1"),
        rule(&method_and_path, "reviews-v2"),
        rule(&path("PathPrefix", "/h"), "reviews-v1"),
        rule(&header_and_query, "reviews-v2"),
        rule(&header_regex, "reviews-v2"),
    ]
    .concat();
    let older = route("reviews-a", "2026-01-01T00:00:00Z", &rules);
    // A newer route with an equally specific match loses to the older one.
    let newer = route(
        "reviews-b",
        "2026-06-01T00:00:00Z",
        &rule(&path("Exact", "/exact"), "reviews-v1"),
    );
    set_routes(&mut mesh, &format!("{older}---\n{newer}"))?;

    let cases: &[(&[&str], &str)] = &[
        (&["/exact"], "v2"),
        (&["/exact/more"], "404"),
        (&["/prefix"], "v1"),
        (&["/prefix/"], "v1"),
        (&["/prefix/x"], "v1"),
        (&["/prefixed"], "404"),       // PathPrefix matches whole segments
        (&["/prefix/deeper/x"], "v2"), // the longest prefix wins
        (&["/re/123"], "v2"),
        (&["/re/abc"], "404"),
        (&["/m/x"], "v1"),
        (&["/m/x", "-X", "POST", "-d", "x"], "v2"), // a method outranks no method
        (&["/h?v=2", "-H", "x-v: two"], "v2"),
        (&["/h?v=2"], "v1"),
        (&["/h", "-H", "x-v: two"], "v1"),
        (&["/hr", "-H", "x-v: too"], "v2"),
        (&["/nothing"], "404"),
    ];
    for (args, want) in cases {
        let url = format!("{REVIEWS}{}", args[0]);
        let mut full = vec![url.as_str()];
        full.extend(&args[1..]);
        assert_eq!(&version(&mesh, &full)?, want, "{args:?}");
    }
    Ok(())
}

#[test]
fn filters_redirects_timeouts_and_local_answers() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    let rules = format!(
        "    - matches:
{hdr}
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{{name: x-set, value: a}}]
            add: [{{name: x-add, value: b}}]
            remove: [x-remove]
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            add: [{{name: x-resp, value: c}}]
      backendRefs: [{{name: reviews-v1, port: 9080}}]
    - matches:
{redirect}
      filters:
        - type: RequestRedirect
          requestRedirect:
            hostname: example.com
            statusCode: 301
    - matches:
{rewrite}
      filters:
        - type: URLRewrite
          urlRewrite:
            hostname: rewritten.example
            path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new}}
      backendRefs: [{{name: reviews-v1, port: 9080}}]
    - matches:
{mirror}
      filters:
        - type: RequestMirror
          requestMirror:
            backendRef: {{name: reviews-v2, port: 9080}}
      backendRefs: [{{name: reviews-v1, port: 9080}}]
    - matches:
{delay_request}
      timeouts: {{request: 300ms}}
      backendRefs: [{{name: reviews-v1, port: 9080}}]
    - matches:
{delay_backend}
          headers: [{{name: x-t, value: backend}}]
      timeouts: {{backendRequest: 300ms}}
      backendRefs: [{{name: reviews-v1, port: 9080}}]
    - matches:
{none}
      backendRefs: [{{name: empty, port: 9080}}]
    - matches:
{zero}
      backendRefs: [{{name: reviews-v2, port: 9080, weight: 0}}, {{name: reviews-v1, port: 9080}}]
",
        hdr = path("PathPrefix", "/hdr"),
        redirect = path("PathPrefix", "/redirect"),
        rewrite = path("PathPrefix", "/old"),
        mirror = path("PathPrefix", "/mirror"),
        delay_request = path("PathPrefix", "/delay"),
        delay_backend = path("PathPrefix", "/delay"),
        none = path("PathPrefix", "/none"),
        zero = path("PathPrefix", "/zero"),
    );
    let empty = "apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec:
  clusterIP: 10.96.0.29
  selector: {app: nothing-has-this}
  ports: [{name: http, port: 9080, targetPort: 9080, appProtocol: http}]
";
    set_routes(
        &mut mesh,
        &format!(
            "{}---\n{empty}",
            route("reviews", "2026-01-01T00:00:00Z", &rules)
        ),
    )?;
    let client = mesh.pod("frontend-7d9f-a")?;

    // Header modifiers, both ways.
    let r = curl(
        client,
        &[
            "-H",
            "x-remove: 1",
            "-H",
            "x-set: old",
            &format!("{REVIEWS}/hdr"),
        ],
    )?;
    let echo = r.echo()?;
    assert_eq!(echo["headers"]["x-set"], "a", "{echo}");
    assert_eq!(echo["headers"]["x-add"], "b", "{echo}");
    assert!(echo["headers"].get("x-remove").is_none(), "{echo}");
    assert_eq!(r.header("x-resp"), Some("c"), "{r:?}");

    // A redirect is answered by the agent, with the Location the spec says.
    let r = curl(client, &[&format!("{REVIEWS}/redirect/x?q=1")])?;
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("http://example.com:9080/redirect/x?q=1"),
        "{r:?}"
    );

    // URL rewrite: the prefix replaced, the host rewritten.
    let echo = curl(client, &[&format!("{REVIEWS}/old/rest?x=1")])?.echo()?;
    assert_eq!(echo["path"], "/new/rest?x=1", "{echo}");
    assert_eq!(echo["headers"]["host"], "rewritten.example", "{echo}");

    // A mirror: the client's answer is reviews-v1's; reviews-v2 got a copy.
    let r = curl(client, &["-d", "payload", &format!("{REVIEWS}/mirror/one")])?;
    assert!(is_v1(&r.pod()?), "{r:?}");
    assert_eq!(r.echo()?["body_bytes"], 7);
    let seen = || -> Result<u64> {
        let r = curl(client, &["http://10.88.1.12:9080/_seen?path=/mirror/one"])?;
        Ok(r.echo()?["count"].as_u64().unwrap_or(0))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while seen()? == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(seen()?, 1, "the mirror reached reviews-v2");

    // Both timeouts answer 504 on time; a request inside them is served.
    for extra in [&[][..], &["-H", "x-t: backend"][..]] {
        let start = std::time::Instant::now();
        let mut args = extra.to_vec();
        let url = format!("{REVIEWS}/delay/3000");
        args.push(&url);
        let r = curl(client, &args)?;
        let took = start.elapsed();
        assert_eq!(r.status, 504, "{extra:?}: {r:?}");
        assert!(
            took < std::time::Duration::from_millis(2500),
            "{extra:?}: {took:?}"
        );
        let mut args = extra.to_vec();
        let url = format!("{REVIEWS}/delay/10");
        args.push(&url);
        assert_eq!(curl(client, &args)?.status, 200, "{extra:?}");
    }

    // No endpoints: 503; no rule: 404; a backend of weight 0 never gets a
    // request. (A missing backend Service is refused by the validator.)
    let r = curl(client, &[&format!("{REVIEWS}/none")])?;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body, "no healthy upstream");
    let pods = pods_of(&curl_many(client, &format!("{REVIEWS}/zero"), 50, &[])?);
    assert!(pods.iter().all(|p| is_v1(p)), "{pods:?}");
    assert_eq!(
        curl(client, &[&format!("{REVIEWS}/elsewhere")])?.status,
        404
    );

    // Each shows in the source's request metrics with its flag.
    let a = mesh.metrics("node-a")?;
    let count = |code: &str, flag: &str| {
        lab::metric_sum(
            &a,
            "istio_requests_total",
            &[
                ("reporter", "source"),
                ("response_code", code),
                ("response_flags", flag),
            ],
        )
    };
    assert!(count("504", "UT") >= 2.0, "{a}");
    assert!(count("503", "UH") >= 1.0, "{a}");
    assert!(count("404", "NR") >= 1.0, "{a}");
    assert!(count("200", "-") >= 4.0, "{a}");
    Ok(())
}

#[test]
fn a_consumer_route_overrides_the_producers_for_its_own_namespace() -> Result<()> {
    let mut mesh = MeshLab::start()?;
    let producer = route(
        "reviews",
        "2026-01-01T00:00:00Z",
        &rule(&path("PathPrefix", "/"), "reviews-v1"),
    );
    // A route in the client's namespace (payments) on the shop's Service:
    // for payments' clients it replaces the producer's; it redirects /only.
    let consumer = format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: reviews-for-payments, namespace: payments}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: reviews, namespace: shop, port: 9080}}]
  rules:
    - matches:
{only}
      filters:
        - type: RequestRedirect
          requestRedirect: {{hostname: consumer.example, statusCode: 302}}
",
        only = path("Exact", "/only")
    );
    mesh.config.remove_all("HTTPRoute", "payments");
    set_routes(&mut mesh, &format!("{producer}---\n{consumer}"))?;
    let from_shop = |p: &str| version(&mesh, &[&format!("{REVIEWS}{p}")]);
    assert_eq!(from_shop("/")?, "v1");
    assert_eq!(from_shop("/only")?, "v1");
    let payments = mesh.pod("payments-6f7c-a")?;
    let r = curl(payments, &[&format!("{REVIEWS}/only")])?;
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("http://consumer.example:9080/only")
    );
    let r = curl(payments, &[&format!("{REVIEWS}/")])?;
    assert_eq!(
        r.status, 404,
        "the producer's route no longer applies: {r:?}"
    );
    Ok(())
}
