//! Certificate issuance, one thread: the agent's side (a P-256 key pair and its
//! CSR, `identity::csr_pem`) and the CA service's (`ca_server::csr::check_csr`
//! then `LocalCa::sign_request`, the calls of `ca_server/issue.rs` after its
//! TokenReview and pod lookup, which go to the API server and are not timed).

use std::time::{Duration, Instant};

use mesh_agent::identity::ca_server::csr::check_csr;
use mesh_agent::identity::{LocalCa, SpiffeId, csr_pem};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use serde_json::{Value, json};

const REQUESTS: usize = 2_000;
const LIFETIME: Duration = Duration::from_secs(24 * 3600);

pub fn measure() -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    LocalCa::init(dir.path())?;
    let ca = LocalCa::load(dir.path())?;

    let t = Instant::now();
    let csrs = (0..REQUESTS)
        .map(|i| {
            let id = SpiffeId::for_workload(
                "cluster.local",
                &format!("ns-{}", i / 100),
                &format!("sa-{i}"),
            );
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            csr_pem(&id, &key)
        })
        .collect::<anyhow::Result<Vec<String>>>()?;
    let agent_us = t.elapsed().as_secs_f64() * 1e6 / REQUESTS as f64;

    let t = Instant::now();
    let mut check = Duration::ZERO;
    for pem in &csrs {
        let c = Instant::now();
        let checked = check_csr(pem, "cluster.local")?;
        check += c.elapsed();
        let signed = ca.sign_request(&checked.identity, &checked.public_key, LIFETIME)?;
        std::hint::black_box(signed);
    }
    let ca_us = t.elapsed().as_secs_f64() * 1e6 / REQUESTS as f64;
    let check_us = check.as_secs_f64() * 1e6 / REQUESTS as f64;
    println!(
        "CA: {:.0} certificates/s on one core ({ca_us:.0} µs each: CSR check {check_us:.0} µs, \
         signing {:.0} µs); agent's key pair and CSR {agent_us:.0} µs",
        1e6 / ca_us,
        ca_us - check_us
    );
    Ok(json!({
        "ca_issue_us": ca_us, "ca_check_csr_us": check_us, "agent_keygen_csr_us": agent_us,
        "ca_issues_per_s_per_core": 1e6 / ca_us,
    }))
}
