//! A lab built from a Kubernetes-shaped YAML file (the same one the agents read):
//! one lab node per `spec.nodeName`, one lab pod per Pod with its `status.podIP`.
//! The agents get a copy of the file in which every Pod carries the
//! `weft.dev/netns` annotation naming its lab namespace.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

use crate::lab::Lab;

pub const NETNS_ANNOTATION: &str = "weft.dev/netns";

/// The configuration file a lab's agents read, editable by tests.
pub struct LabConfig {
    docs: Vec<Yaml>,
    path: PathBuf,
}

impl LabConfig {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the file (atomically: write then rename, as editors and
    /// ConfigMap updates do). Returns whether its content changed.
    pub fn save(&self) -> Result<bool> {
        let mut text = String::new();
        for doc in &self.docs {
            let mut out = String::new();
            YamlEmitter::new(&mut out)
                .dump(doc)
                .context("render YAML")?;
            text.push_str(&out);
            text.push('\n');
        }
        if std::fs::read_to_string(&self.path).is_ok_and(|old| old == text) {
            return Ok(false);
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(true)
    }

    /// Sets (or, with `None`, removes) a label on the resource `kind` `namespace/name`
    /// (`namespace` empty for cluster-scoped kinds).
    pub fn set_label(
        &mut self,
        kind: &str,
        namespace: &str,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<()> {
        let doc = self
            .docs
            .iter_mut()
            .find(|d| matches(d, kind, namespace, name))
            .with_context(|| format!("no {kind} {namespace}/{name} in the lab config"))?;
        let labels = nested_hash(doc, &["metadata", "labels"])?;
        match value {
            Some(v) => {
                labels.insert(Yaml::from_str(key), Yaml::String(v.to_string()));
            }
            None => {
                labels.remove(&Yaml::String(key.to_string()));
            }
        }
        Ok(())
    }

    /// Removes the resource `kind` `namespace/name`.
    pub fn remove(&mut self, kind: &str, namespace: &str, name: &str) -> Result<Yaml> {
        let pos = self
            .docs
            .iter()
            .position(|d| matches(d, kind, namespace, name))
            .with_context(|| format!("no {kind} {namespace}/{name} in the lab config"))?;
        Ok(self.docs.remove(pos))
    }

    pub fn add(&mut self, doc: Yaml) {
        self.docs.push(doc);
    }

    /// Adds the resources of a YAML text (one or more documents).
    pub fn add_yaml(&mut self, text: &str) -> Result<()> {
        let docs = YamlLoader::load_from_str(text).context("parse the YAML to add")?;
        self.docs.extend(docs);
        Ok(())
    }

    /// Removes every resource of `kind` in `namespace`; returns how many.
    pub fn remove_all(&mut self, kind: &str, namespace: &str) -> usize {
        let before = self.docs.len();
        self.docs.retain(|d| {
            !(d["kind"].as_str() == Some(kind)
                && d["metadata"]["namespace"].as_str() == Some(namespace))
        });
        before - self.docs.len()
    }

    /// The `containerPort`s of every Pod, by pod name.
    pub fn container_ports(&self) -> Vec<(String, Vec<u16>)> {
        self.docs
            .iter()
            .filter(|d| d["kind"].as_str() == Some("Pod"))
            .filter_map(|d| {
                let name = d["metadata"]["name"].as_str()?.to_string();
                let ports = d["spec"]["containers"]
                    .as_vec()
                    .into_iter()
                    .flatten()
                    .flat_map(|c| c["ports"].as_vec().cloned().unwrap_or_default())
                    .filter_map(|p| u16::try_from(p["containerPort"].as_i64()?).ok())
                    .collect();
                Some((name, ports))
            })
            .collect()
    }
}

fn matches(doc: &Yaml, kind: &str, namespace: &str, name: &str) -> bool {
    doc["kind"].as_str() == Some(kind)
        && doc["metadata"]["name"].as_str() == Some(name)
        && doc["metadata"]["namespace"].as_str().unwrap_or("") == namespace
}

/// The mapping at `doc.<path...>`, created empty where missing.
fn nested_hash<'a>(doc: &'a mut Yaml, path: &[&str]) -> Result<&'a mut yaml_rust2::yaml::Hash> {
    let Yaml::Hash(hash) = doc else {
        bail!("expected a mapping holding {path:?}")
    };
    let mut hash = hash;
    for key in path {
        hash = child_hash(hash, key)?;
    }
    Ok(hash)
}

fn child_hash<'a>(
    hash: &'a mut yaml_rust2::yaml::Hash,
    key: &str,
) -> Result<&'a mut yaml_rust2::yaml::Hash> {
    let entry = hash
        .entry(Yaml::from_str(key))
        .or_insert_with(|| Yaml::Hash(Default::default()));
    if entry.is_null() {
        *entry = Yaml::Hash(Default::default());
    }
    match entry {
        Yaml::Hash(h) => Ok(h),
        _ => bail!("{key:?} is not a mapping"),
    }
}

impl Lab {
    /// Builds a lab with the nodes and pods `file` describes and writes the agents'
    /// copy of it into the lab's run dir.
    pub fn from_config(file: &Path) -> Result<(Lab, LabConfig)> {
        Self::from_config_with(file, Lab::new()?)
    }

    /// As [`Lab::from_config`], dual stack ([`Lab::new_dual_stack`]): the agents'
    /// copy lists each pod's IPv6 address after its IPv4 one in `status.podIPs`.
    pub fn from_config_dual_stack(file: &Path) -> Result<(Lab, LabConfig)> {
        Self::from_config_with(file, Lab::new_dual_stack()?)
    }

    fn from_config_with(file: &Path, mut lab: Lab) -> Result<(Lab, LabConfig)> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
        let mut docs = YamlLoader::load_from_str(&text)
            .with_context(|| format!("parse {}", file.display()))?;
        for doc in docs
            .iter_mut()
            .filter(|d| d["kind"].as_str() == Some("Pod"))
        {
            let name = doc["metadata"]["name"]
                .as_str()
                .context("a Pod without metadata.name")?
                .to_string();
            let node = doc["spec"]["nodeName"]
                .as_str()
                .with_context(|| format!("Pod {name}: no spec.nodeName"))?
                .to_string();
            let ip: Ipv4Addr = doc["status"]["podIP"]
                .as_str()
                .or_else(|| doc["status"]["podIPs"][0]["ip"].as_str())
                .with_context(|| format!("Pod {name}: no status.podIP"))?
                .parse()
                .with_context(|| format!("Pod {name}: status.podIP is not an IPv4 address"))?;
            if lab.node(&node).is_err() {
                lab.add_node(&node)?;
            }
            let expected = lab.node(&node)?.pod_ip(0);
            if ip.octets()[..3] != expected.octets()[..3] {
                bail!(
                    "Pod {name}: the lab gives node {node} the subnet {expected}/24, but status.podIP is {ip}"
                );
            }
            let pod = lab.add_pod(&node, &name, Some(ip))?;
            let (netns, ip6) = (pod.netns_path(), pod.ip6);
            if let Some(ip6) = ip6 {
                let entry = |ip: String| {
                    let mut entry = yaml_rust2::yaml::Hash::new();
                    entry.insert(Yaml::from_str("ip"), Yaml::String(ip));
                    Yaml::Hash(entry)
                };
                let status = nested_hash(doc, &["status"])?;
                let ips = status
                    .entry(Yaml::from_str("podIPs"))
                    .or_insert_with(|| Yaml::Array(vec![entry(ip.to_string())]));
                if let Yaml::Array(ips) = ips {
                    ips.push(entry(ip6.to_string()));
                }
            }
            let annotations = nested_hash(doc, &["metadata", "annotations"])?;
            annotations.insert(
                Yaml::from_str(NETNS_ANNOTATION),
                Yaml::String(netns.display().to_string()),
            );
        }
        lab.wait_until_forwarding()?;
        let config = LabConfig {
            docs,
            path: lab.run_dir().join("mesh.yaml"),
        };
        config.save()?;
        Ok((lab, config))
    }
}
