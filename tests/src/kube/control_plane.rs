//! A real Kubernetes control plane on the host's loopback: etcd,
//! kube-apiserver and kube-controller-manager, with a fresh PKI, random ports,
//! a directory under /run and a cgroup of its own, all removed on drop.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::binaries::{binary, etcd_binary};
use super::certs::Pki;
use super::flags;
use super::kubeconfig::{Credentials, write_kubeconfig};
use super::process::Proc;
use crate::lab::{find_cgroup2, kill_cgroup, remove_cgroup};
use crate::names::lab_id;

const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct ControlPlane {
    id: String,
    dir: PathBuf,
    cgroup: PathBuf,
    pub(super) pki: Pki,
    pub(super) kubectl: PathBuf,
    pub(super) kubeconfig: PathBuf,
    pub(super) apiserver_addr: SocketAddr,
    etcd_addr: SocketAddr,
    procs: Mutex<Procs>,
}

#[derive(Default)]
struct Procs {
    etcd: Option<Proc>,
    apiserver: Option<Proc>,
    controller_manager: Option<Proc>,
}

impl Procs {
    fn all_mut(&mut self) -> [&mut Option<Proc>; 3] {
        [
            &mut self.controller_manager,
            &mut self.apiserver,
            &mut self.etcd,
        ]
    }
}

impl ControlPlane {
    /// Starts all three and waits until the API server is ready and the
    /// controller manager has made the `default` ServiceAccount. Ports are
    /// picked free and then bound by the servers, so a start that loses a port
    /// to a parallel test is tried again.
    pub fn start() -> Result<ControlPlane> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once() {
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    eprintln!("control plane: a port was taken, starting again: {e:#}");
                }
                result => return result,
            }
        }
    }

    fn start_once() -> Result<ControlPlane> {
        let started = Instant::now();
        let kubectl_bin = binary("kubectl")?;
        let id = format!("{}-cp", lab_id());
        let cgroup_root = find_cgroup2().context("no cgroup v2 hierarchy is mounted")?;
        let dir = PathBuf::from("/run").join(&id);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let cgroup = cgroup_root.join(&id);
        if let Err(e) = std::fs::create_dir(&cgroup) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e).with_context(|| format!("create cgroup {}", cgroup.display()));
        }
        let pki = match Pki::generate(&dir) {
            Ok(pki) => pki,
            Err(e) => {
                let _ = remove_cgroup(&cgroup);
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e.context("generate the control plane's PKI"));
            }
        };
        // From here on, Drop removes whatever was made.
        let mut cp = ControlPlane {
            pki,
            kubectl: kubectl_bin,
            kubeconfig: dir.join("admin.kubeconfig"),
            apiserver_addr: free_port()?,
            etcd_addr: free_port()?,
            procs: Mutex::new(Procs::default()),
            id,
            dir,
            cgroup,
        };
        cp.setup_and_run()?;
        eprintln!(
            "control plane {} ready in {:.1} s at {}",
            cp.id,
            started.elapsed().as_secs_f64(),
            cp.server()
        );
        Ok(cp)
    }

    fn setup_and_run(&mut self) -> Result<()> {
        write_kubeconfig(
            &self.kubeconfig,
            &self.server(),
            &self.pki.ca.cert,
            Credentials::Certificate(&self.pki.admin),
        )?;
        let kcm_kubeconfig = self.dir.join("controller-manager.kubeconfig");
        write_kubeconfig(
            &kcm_kubeconfig,
            &self.server(),
            &self.pki.ca.cert,
            Credentials::Certificate(&self.pki.controller_manager),
        )?;

        let peer = free_port()?;
        let etcd_args = flags::etcd(&self.dir.join("etcd"), self.etcd_addr, peer);
        let etcd = self.spawn("etcd", &etcd_binary()?, &etcd_args)?;
        self.procs().etcd = Some(etcd);
        self.wait("etcd accepting connections", || {
            Ok(TcpStream::connect(self.etcd_addr).is_ok())
        })?;

        self.start_apiserver()?;

        let kcm_args = flags::controller_manager(&self.pki, &kcm_kubeconfig, free_port()?.port());
        let kcm = self.spawn(
            "kube-controller-manager",
            &binary("kube-controller-manager")?,
            &kcm_args,
        )?;
        self.procs().controller_manager = Some(kcm);
        self.wait("the default ServiceAccount (controller manager)", || {
            Ok(self
                .kubectl(&["get", "serviceaccount", "default", "-n", "default"])
                .is_ok())
        })
    }

    fn spawn(&self, name: &'static str, program: &Path, args: &[String]) -> Result<Proc> {
        let log = self.dir.join(format!("{name}.log"));
        Proc::spawn(name, program, args, &self.cgroup, log)
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, Procs> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Polls `ready` until it says yes; fails early if a process exited, and
    /// with every process's log tail on failure.
    fn wait(&self, what: &str, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ready()? {
                return Ok(());
            }
            let exited: Vec<String> = self
                .procs()
                .all_mut()
                .into_iter()
                .flatten()
                .filter_map(|p| p.exited().map(|s| format!("{} exited: {s}", p.name)))
                .collect();
            if !exited.is_empty() || Instant::now() > deadline {
                let logs = self.log_tails(30);
                bail!(
                    "control plane {}: no {what} ({exited:?}); logs:\n{logs}",
                    self.id
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `lines` lines of each process's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for proc in self.procs().all_mut().into_iter().flatten() {
            out += &format!(
                "--- {} ({})\n{}\n",
                proc.name,
                proc.log.display(),
                proc.tail(lines)
            );
        }
        out
    }

    /// The running processes: (name, pid).
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        let mut procs = self.procs();
        procs
            .all_mut()
            .into_iter()
            .flatten()
            .map(|p| (p.name, p.pid()))
            .collect()
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> String {
        format!("https://{}", self.apiserver_addr)
    }

    pub fn apiserver_addr(&self) -> SocketAddr {
        self.apiserver_addr
    }

    /// The admin kubeconfig (`system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster CA: it signed the serving certificate.
    pub fn ca_cert(&self) -> &Path {
        &self.pki.ca.cert
    }

    /// The PKI, to issue more client certificates.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// This control plane's directory (logs, keys, kubeconfigs), removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Kills the API server (SIGKILL: an outage, not a drain). etcd and the
    /// controller manager keep running.
    pub fn stop_apiserver(&self) -> Result<()> {
        let mut procs = self.procs();
        let mut apiserver = procs
            .apiserver
            .take()
            .context("the API server is not running")?;
        apiserver.kill();
        Ok(())
    }

    /// Starts the API server on the same port and etcd, and waits until ready.
    pub fn start_apiserver(&self) -> Result<()> {
        if self.procs().apiserver.is_some() {
            bail!("the API server is already running");
        }
        let args = flags::apiserver(
            &self.pki,
            self.apiserver_addr,
            self.etcd_addr,
            &self.dir.join("apiserver-certs"),
        );
        let proc = self.spawn("kube-apiserver", &binary("kube-apiserver")?, &args)?;
        self.procs().apiserver = Some(proc);
        self.wait("/readyz of the API server", || {
            Ok(self.kubectl(&["get", "--raw", "/readyz"]).is_ok())
        })
    }

    /// Kills every process and removes the cgroup and the directory. Idempotent.
    pub fn shutdown(&self) {
        for proc in self.procs().all_mut() {
            if let Some(mut p) = proc.take() {
                p.kill();
            }
        }
        if self.cgroup.exists() {
            kill_cgroup(&self.cgroup);
            if let Err(e) = remove_cgroup(&self.cgroup) {
                eprintln!("control plane {}: {e:#}", self.id);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("find a free port")?;
    Ok(listener.local_addr()?)
}
