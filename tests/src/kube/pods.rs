//! Pods as kubelet runs them: the Pod object, a sandbox ("pause") process and
//! the containers' processes in kubelet-layout cgroups and the pod's netns,
//! then the status that makes it Running and Ready.

use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::cgroups::{Qos, container_id};
use super::kubelet::KubeLab;
use super::status::{ContainerState, now_rfc3339, pod_status};
use crate::lab::{kill_cgroup, remove_cgroup};
use crate::pod::in_cgroup_and_netns;

/// A container's identity on the node: its containerd id and cgroup.
pub struct Container {
    pub name: String,
    pub image: String,
    pub id: String,
    pub cgroup: PathBuf,
}

/// A pod the lab runs.
pub struct KubePod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The lab node it runs on.
    pub node: String,
    pub ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
    pub qos: Qos,
    pub host_network: bool,
    /// Its network namespace (the node's for hostNetwork pods).
    pub netns: PathBuf,
    /// The pod-level cgroup (`…/pod<uid>`).
    pub cgroup: PathBuf,
    /// The sandbox ("pause") container, which holds a process for the pod's life.
    pub sandbox: Container,
    pub containers: Vec<Container>,
    /// The lab's pod (netns and veth); none for hostNetwork pods.
    lab_pod: Option<String>,
    pids: Vec<u32>,
}

impl KubePod {
    /// A command in the pod's first container: its cgroup and the pod's netns.
    pub fn command(&self, program: &str) -> Command {
        let first = self.containers.first().unwrap_or(&self.sandbox);
        in_cgroup_and_netns(&first.cgroup, &self.netns, program)
    }

    /// A command in the container named `container`.
    pub fn container_command(&self, container: &str, program: &str) -> Result<Command> {
        let c = self
            .containers
            .iter()
            .find(|c| c.name == container)
            .with_context(|| format!("pod {} has no container {container}", self.name))?;
        Ok(in_cgroup_and_netns(&c.cgroup, &self.netns, program))
    }

    /// Runs `f` on a thread in the pod's netns (listeners and other set-up).
    pub fn in_netns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        crate::pod::in_netns(&self.netns, f)
    }

    /// The HTTP status code `curl` gets for `url` from the pod's first container.
    pub fn http_status(&self, url: &str) -> Result<String> {
        let out = self
            .command("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                url,
            ])
            .output()?;
        if !out.status.success() {
            bail!(
                "curl {url}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The pids of the processes the lab started for it (sandbox first).
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }
}

impl KubeLab {
    /// Creates the Pod in `manifest` (YAML or JSON) bound to lab node `node`
    /// (`spec.nodeName` is set here), then runs it like a kubelet: see
    /// [`KubeLab::run_existing_pod`].
    pub fn run_pod(&mut self, node: &str, manifest: &str) -> Result<&KubePod> {
        let node_object = self.node(node)?.object.clone();
        let mut pod: Value = serde_json::from_str(
            &self
                .cp()
                .kubectl_with_input(
                    &["create", "--dry-run=client", "-o", "json", "-f", "-"],
                    manifest,
                )
                .context("read the pod manifest")?,
        )?;
        if pod["kind"] != "Pod" {
            bail!("run_pod wants a Pod manifest, not {}", pod["kind"]);
        }
        pod["spec"]["nodeName"] = Value::from(node_object);
        if pod["metadata"]["namespace"].is_null() {
            pod["metadata"]["namespace"] = Value::from("default");
        }
        let created = self.create_pod_object(&pod)?;
        self.start_pod(node, created)
    }

    /// Runs a Pod that already exists (made by a controller, e.g. a Deployment):
    /// binds it to `node` like the scheduler if it is not yet, then starts it.
    pub fn run_existing_pod(
        &mut self,
        node: &str,
        namespace: &str,
        name: &str,
    ) -> Result<&KubePod> {
        let node_object = self.node(node)?.object.clone();
        let get = |lab: &KubeLab| -> Result<Value> {
            let out = lab
                .cp()
                .kubectl(&["get", "pod", name, "-n", namespace, "-o", "json"])?;
            Ok(serde_json::from_str(&out)?)
        };
        let mut pod = get(self)?;
        match pod["spec"]["nodeName"].as_str() {
            Some(bound) if bound != node_object => {
                bail!("pod {namespace}/{name} is bound to {bound}, not {node_object}")
            }
            Some(_) => {}
            None => {
                let binding = serde_json::json!({
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": { "name": name, "namespace": namespace },
                    "target": { "apiVersion": "v1", "kind": "Node", "name": node_object },
                });
                self.cp()
                    .kubectl_with_input(&["create", "-f", "-"], &binding.to_string())
                    .with_context(|| format!("bind {namespace}/{name} to {node_object}"))?;
                pod = get(self)?;
            }
        }
        self.start_pod(node, pod)
    }

    /// `kubectl create`, retried while the namespace's ServiceAccount is not
    /// made yet (the controller manager makes it just after the namespace).
    fn create_pod_object(&self, pod: &Value) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self
                .cp()
                .kubectl_with_input(&["create", "-o", "json", "-f", "-"], &pod.to_string())
            {
                Ok(out) => return Ok(serde_json::from_str(&out)?),
                Err(e)
                    if format!("{e:#}").contains("serviceaccount")
                        && format!("{e:#}").contains("not found")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.context("create the Pod")),
            }
        }
    }

    fn start_pod(&mut self, node: &str, pod: Value) -> Result<&KubePod> {
        let text = |v: &Value| v.as_str().map(str::to_string);
        let meta = &pod["metadata"];
        let (namespace, name, uid) = (
            text(&meta["namespace"]).context("pod without namespace")?,
            text(&meta["name"]).context("pod without name")?,
            text(&meta["uid"]).context("pod without uid")?,
        );
        let qos = Qos::parse(pod["status"]["qosClass"].as_str().unwrap_or("BestEffort"))?;
        let host_network = pod["spec"]["hostNetwork"].as_bool() == Some(true);
        let node_ref = self.node(node)?;
        let (node_cgroup, node_netns, host_ip) =
            (node_ref.cgroup.clone(), node_ref.netns.clone(), node_ref.ip);
        let cgroup = self.driver().pod_cgroup(&node_cgroup, qos, &uid);
        let driver = self.driver();
        let container = |name: &str, image: &str| -> Result<Container> {
            let id = container_id()?;
            Ok(Container {
                name: name.to_string(),
                image: image.to_string(),
                cgroup: driver.container_cgroup(&cgroup, &id),
                id,
            })
        };
        let sandbox = container("POD", "registry.k8s.io/pause:3.10")?;
        let mut containers = Vec::new();
        for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
            containers.push(container(
                c["name"].as_str().unwrap_or("app"),
                c["image"].as_str().unwrap_or(""),
            )?);
        }
        let lab_pod = format!("{namespace}.{name}");
        let (ip, netns, lab_pod) = if host_network {
            std::fs::create_dir_all(&sandbox.cgroup)
                .with_context(|| format!("create {}", sandbox.cgroup.display()))?;
            (host_ip, node_netns, None)
        } else {
            let p =
                self.lab_mut()
                    .add_pod_in_cgroup(node, &lab_pod, None, sandbox.cgroup.clone())?;
            (p.ip, p.netns_path(), Some(lab_pod))
        };
        let mut kube_pod = KubePod {
            namespace,
            name,
            uid,
            node: node.to_string(),
            ip,
            host_ip,
            qos,
            host_network,
            netns,
            cgroup,
            sandbox,
            containers,
            lab_pod,
            pids: Vec::new(),
        };
        // Registered before anything can fail, so delete/drop clean up.
        let result = self.run_processes(&mut kube_pod, &pod);
        self.pods.push(kube_pod);
        result?;
        let (namespace, name) = {
            let p = self.pods.last().expect("just pushed");
            (p.namespace.clone(), p.name.clone())
        };
        self.set_pod_ready(&namespace, &name, true)?;
        self.pod(&namespace, &name)
    }

    /// The sandbox's `sleep infinity`, then each container's `command` + `args`
    /// (the image is not used: the lab runs host programs), output to
    /// `<run dir>/pods/<namespace>_<pod>_<container>.log`.
    fn run_processes(&self, pod: &mut KubePod, object: &Value) -> Result<()> {
        for c in &pod.containers {
            std::fs::create_dir_all(&c.cgroup)
                .with_context(|| format!("create {}", c.cgroup.display()))?;
        }
        let mut pause = in_cgroup_and_netns(&pod.sandbox.cgroup, &pod.netns, "sleep");
        pause.arg("infinity");
        pod.pids.push(self.spawn(pause)?);
        let logs = self.lab().run_dir().join("pods");
        std::fs::create_dir_all(&logs)?;
        let specs = object["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (c, spec) in pod.containers.iter().zip(&specs) {
            let argv: Vec<&str> = ["command", "args"]
                .iter()
                .flat_map(|k| spec[*k].as_array().into_iter().flatten())
                .filter_map(Value::as_str)
                .collect();
            if spec["command"].as_array().is_none_or(Vec::is_empty) {
                continue;
            }
            let mut cmd = in_cgroup_and_netns(&c.cgroup, &pod.netns, argv[0]);
            cmd.args(&argv[1..]);
            for env in spec["env"].as_array().into_iter().flatten() {
                if let (Some(k), Some(v)) = (env["name"].as_str(), env["value"].as_str()) {
                    cmd.env(k, v);
                }
            }
            let log = logs.join(format!("{}_{}_{}.log", pod.namespace, pod.name, c.name));
            let out = OpenOptions::new().create(true).append(true).open(&log)?;
            cmd.stdout(out.try_clone()?).stderr(out);
            pod.pids.push(self.spawn(cmd)?);
        }
        Ok(())
    }

    /// Reports the pod Ready (or not), as kubelet does after its probes.
    pub fn set_pod_ready(&self, namespace: &str, name: &str, ready: bool) -> Result<()> {
        let pod = self.pod(namespace, name)?;
        let states: Vec<ContainerState<'_>> = pod
            .containers
            .iter()
            .map(|c| ContainerState {
                name: &c.name,
                image: &c.image,
                id: &c.id,
            })
            .collect();
        let status = pod_status(pod.ip, pod.host_ip, &states, ready, &now_rfc3339());
        self.cp()
            .kubectl(&[
                "patch",
                "pod",
                name,
                "-n",
                namespace,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ])
            .with_context(|| format!("report pod {namespace}/{name} running"))?;
        Ok(())
    }

    /// Deletes a pod as it goes in a cluster: the API deletion (terminating),
    /// the processes killed, the netns and cgroups removed, and the final
    /// deletion kubelet confirms with a grace period of 0.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) -> Result<()> {
        let pos = self
            .pods
            .iter()
            .position(|p| p.namespace == namespace && p.name == name)
            .with_context(|| format!("no pod {namespace}/{name} runs in the lab"))?;
        self.cp()
            .kubectl(&["delete", "pod", name, "-n", namespace, "--wait=false"])?;
        let pod = self.pods.remove(pos);
        kill_cgroup(&pod.cgroup);
        for pid in &pod.pids {
            self.lab().kill(*pid)?;
        }
        if let Some(lab_pod) = &pod.lab_pod {
            self.lab_mut().remove_pod(lab_pod)?;
        }
        remove_cgroup(&pod.cgroup)?;
        self.cp().kubectl(&[
            "delete",
            "pod",
            name,
            "-n",
            namespace,
            "--grace-period=0",
            "--force",
            "--ignore-not-found",
        ])?;
        Ok(())
    }
}
