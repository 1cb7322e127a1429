//! The CA service as the Deployment in `manifests/ca/` runs it: its container's
//! command, args and env, with the `weft-ca` ServiceAccount's token. The lab runs
//! one replica on the host's loopback and stands in for the Service: its cluster
//! IP is put on each node's loopback and forwarded there (kube-proxy's job), and
//! the certificate names that IP (cluster DNS's job would be the name).

use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::install::{SYSTEM_NAMESPACE, argv, container_spec, env, substitute};
use crate::agent::agent_binary;
use crate::kube::{ControlPlane, Forwarder};

pub struct CaService {
    pub pid: u32,
    pub addr: SocketAddr,
    /// The `weft-ca` Service's cluster IP.
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub log: PathBuf,
}

impl CaService {
    /// Starts the CA from the Deployment's container spec. `spawn` registers the
    /// process with the lab, which kills it on drop.
    pub fn start(
        cp: &ControlPlane,
        dir: &Path,
        ca_dir: &Path,
        spawn: impl FnOnce(Command) -> Result<u32>,
    ) -> Result<CaService> {
        Self::launch(cp, dir, ca_dir, "weft-ca-lab", "weft-ca", spawn)
    }

    /// Another replica of the Deployment, as pod `pod_name` (its `POD_NAME`,
    /// so its own identity in the status Lease), with its own port, kubeconfig
    /// and log (`<dir>/<pod_name>.log`).
    pub fn start_replica(
        cp: &ControlPlane,
        dir: &Path,
        ca_dir: &Path,
        pod_name: &str,
        spawn: impl FnOnce(Command) -> Result<u32>,
    ) -> Result<CaService> {
        Self::launch(cp, dir, ca_dir, pod_name, pod_name, spawn)
    }

    /// `files`: the stem of the kubeconfig and log file names in `dir`.
    fn launch(
        cp: &ControlPlane,
        dir: &Path,
        ca_dir: &Path,
        pod_name: &str,
        files: &str,
        spawn: impl FnOnce(Command) -> Result<u32>,
    ) -> Result<CaService> {
        let container = container_spec(cp, "deployment/weft-ca")?;
        let vars = env(
            &container,
            &[
                ("metadata.name", pod_name),
                ("metadata.namespace", SYSTEM_NAMESPACE),
            ],
        )?;
        let mut args = argv(&container, &vars);
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let service: serde_json::Value = serde_json::from_str(&cp.kubectl(&[
            "get",
            "service",
            "weft-ca",
            "-n",
            SYSTEM_NAMESPACE,
            "-o",
            "json",
        ])?)?;
        let cluster_ip: Ipv4Addr = service["spec"]["clusterIP"]
            .as_str()
            .context("the weft-ca Service has no cluster IP")?
            .parse()?;
        let service_port = service["spec"]["ports"][0]["port"]
            .as_u64()
            .context("the weft-ca Service has no port")? as u16;
        substitute(&mut args, "--listen", &addr.to_string())?;
        substitute(&mut args, "--ca-dir", &ca_dir.to_string_lossy())?;
        let token = cp.token(
            SYSTEM_NAMESPACE,
            "weft-ca",
            "https://kubernetes.default.svc.cluster.local",
            None,
        )?;
        let kubeconfig = dir.join(format!("{files}.kubeconfig"));
        cp.write_token_kubeconfig(&kubeconfig, &token, None)?;
        let log = dir.join(format!("{files}.log"));
        let log_file = OpenOptions::new().create(true).append(true).open(&log)?;
        let mut cmd = Command::new(agent_binary()?);
        cmd.args(&args[1..])
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--serving-ip={cluster_ip}"))
            .arg("--serving-ip=127.0.0.1")
            .env_clear()
            .envs(vars)
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        if args.first().map(String::as_str) != Some("mesh-agent") {
            bail!("the CA container's command is not mesh-agent: {args:?}");
        }
        let pid = spawn(cmd)?;
        let ca = CaService {
            pid,
            addr,
            cluster_ip,
            port: service_port,
            log,
        };
        ca.wait_serving()?;
        Ok(ca)
    }

    /// Puts the Service's cluster IP on `netns`'s loopback and forwards its port
    /// to the CA.
    pub fn forward_into(&self, netns: &Path) -> Result<Forwarder> {
        Forwarder::service(netns, self.cluster_ip, self.port, self.addr)
    }

    fn wait_serving(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "the CA did not listen on {} within 30 s; its log:\n{}",
            self.addr,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
