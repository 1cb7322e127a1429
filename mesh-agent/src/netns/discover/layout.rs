//! The kubelet's pod cgroup names on cgroup v2, for both of its cgroup drivers.
//! Pure: no I/O.
//!
//! ```text
//! cgroupfs  …/kubepods/pod<uid>/<container>                          (Guaranteed)
//!           …/kubepods/<burstable|besteffort>/pod<uid>/<container>
//! systemd   …/kubepods.slice/kubepods-pod<uid_>.slice/<runtime>-<id>.scope
//!           …/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/…
//! ```
//! systemd slice names spell out their ancestry and cannot hold `-` in a name
//! part, so the UID's dashes become underscores there. With a kubelet
//! `--cgroup-root` the kubepods slice gets a prefix (`kubelet-kubepods.slice`,
//! as in kind), and so do its children.

use serde::{Deserialize, Serialize};

/// A pod's QoS class, which decides where the kubelet puts its cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    /// Directly under kubepods.
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// The classes that have a cgroup of their own under kubepods.
    pub const WITH_CGROUP: [QosClass; 2] = [QosClass::Burstable, QosClass::BestEffort];

    fn dir_part(self) -> Option<&'static str> {
        match self {
            QosClass::Guaranteed => None,
            QosClass::Burstable => Some("burstable"),
            QosClass::BestEffort => Some("besteffort"),
        }
    }
}

/// The kubelet's cgroup driver, as the names under kubepods show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubepodsLayout {
    Cgroupfs,
    Systemd,
}

/// The layout of a kubepods cgroup by its directory name, if it is one.
pub fn kubepods_layout(name: &str) -> Option<KubepodsLayout> {
    if name == "kubepods" {
        Some(KubepodsLayout::Cgroupfs)
    } else if name == "kubepods.slice" || name.ends_with("-kubepods.slice") {
        Some(KubepodsLayout::Systemd)
    } else {
        None
    }
}

/// The directory name of a QoS class's cgroup under the kubepods cgroup named
/// `kubepods`; `None` for Guaranteed, which has none.
pub fn qos_dir_name(kubepods: &str, class: QosClass) -> Option<String> {
    let part = class.dir_part()?;
    match kubepods.strip_suffix(".slice") {
        Some(stem) => Some(format!("{stem}-{part}.slice")),
        None => Some(part.to_string()),
    }
}

/// The QoS class whose cgroup is named `name` under the kubepods cgroup named
/// `kubepods`, if it is one.
pub fn qos_of_dir(kubepods: &str, name: &str) -> Option<QosClass> {
    QosClass::WITH_CGROUP
        .into_iter()
        .find(|class| qos_dir_name(kubepods, *class).as_deref() == Some(name))
}

/// The pod UID in a pod cgroup's directory name: `pod<uid>` (cgroupfs) or
/// `…-pod<uid_with_underscores>.slice` (systemd).
pub fn pod_uid_of_dir(name: &str) -> Option<String> {
    if let Some(stem) = name.strip_suffix(".slice") {
        let (_, raw) = stem.rsplit_once("-pod")?;
        // A dash here would have split the slice name: not a pod slice.
        if raw.contains('-') {
            return None;
        }
        let uid = raw.replace('_', "-");
        return valid_uid(&uid).then_some(uid);
    }
    let uid = name.strip_prefix("pod")?;
    valid_uid(uid).then(|| uid.to_string())
}

/// API server UIDs are UUIDs; static pods' are a hex hash. Anything else is not a
/// pod (a stray `pod…` directory must not become one).
fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        && uid.chars().any(|c| c.is_ascii_hexdigit())
}

/// A pod cgroup found in a cgroup path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCgroupPath {
    pub uid: String,
    pub qos: QosClass,
    pub layout: KubepodsLayout,
    /// The path up to and including the pod's own directory.
    pub pod_path: String,
    /// The path up to and including the kubepods directory.
    pub kubepods_path: String,
}

/// The pod a cgroup path (e.g. the `0::` line of `/proc/<pid>/cgroup`, or a
/// directory under the cgroup mount) belongs to, in either layout, whatever comes
/// before the kubepods directory.
pub fn pod_of_cgroup_path(path: &str) -> Option<PodCgroupPath> {
    let parts: Vec<&str> = path.split('/').collect();
    let (k, layout) = parts
        .iter()
        .enumerate()
        .find_map(|(i, part)| Some((i, kubepods_layout(part)?)))?;
    let kubepods = parts[k];
    let next = parts.get(k + 1)?;
    let (qos, pod_index) = match qos_of_dir(kubepods, next) {
        Some(class) => (class, k + 2),
        None => (QosClass::Guaranteed, k + 1),
    };
    let uid = pod_uid_of_dir(parts.get(pod_index)?)?;
    Some(PodCgroupPath {
        uid,
        qos,
        layout,
        pod_path: parts[..=pod_index].join("/"),
        kubepods_path: parts[..=k].join("/"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
    const UID_: &str = "1b4e28ba_2fa1_11d2_883f_0016d3cca427";

    #[test]
    fn cgroupfs_layout_in_every_qos_class() {
        let p = pod_of_cgroup_path(&format!("/kubepods/besteffort/pod{UID}/0123abcd")).unwrap();
        assert_eq!(p.uid, UID);
        assert_eq!(p.qos, QosClass::BestEffort);
        assert_eq!(p.layout, KubepodsLayout::Cgroupfs);
        assert_eq!(p.pod_path, format!("/kubepods/besteffort/pod{UID}"));
        assert_eq!(p.kubepods_path, "/kubepods");

        let p = pod_of_cgroup_path(&format!("/kubepods/burstable/pod{UID}/c")).unwrap();
        assert_eq!(p.qos, QosClass::Burstable);

        let p = pod_of_cgroup_path(&format!("/kubepods/pod{UID}/c")).unwrap();
        assert_eq!((p.uid.as_str(), p.qos), (UID, QosClass::Guaranteed));
        assert_eq!(p.pod_path, format!("/kubepods/pod{UID}"));
    }

    #[test]
    fn systemd_layout_in_every_qos_class() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-0123abcd.scope"
        );
        let p = pod_of_cgroup_path(&path).unwrap();
        assert_eq!(p.uid, UID);
        assert_eq!(p.qos, QosClass::Burstable);
        assert_eq!(p.layout, KubepodsLayout::Systemd);
        assert_eq!(
            p.pod_path,
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice")
        );

        let path = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-1.scope"
        );
        assert_eq!(pod_of_cgroup_path(&path).unwrap().qos, QosClass::BestEffort);

        let path = format!("/kubepods.slice/kubepods-pod{UID_}.slice/docker-1.scope");
        let p = pod_of_cgroup_path(&path).unwrap();
        assert_eq!((p.uid.as_str(), p.qos), (UID, QosClass::Guaranteed));
    }

    #[test]
    fn any_prefix_before_kubepods() {
        let lab = format!("/sys/fs/cgroup/wl1234/node-a/kubepods/besteffort/pod{UID}/c1");
        let p = pod_of_cgroup_path(&lab).unwrap();
        assert_eq!(p.uid, UID);
        assert_eq!(p.kubepods_path, "/sys/fs/cgroup/wl1234/node-a/kubepods");

        // kind: kubelet --cgroup-root=/kubelet with the systemd driver.
        let kind = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-1.scope"
        );
        let p = pod_of_cgroup_path(&kind).unwrap();
        assert_eq!((p.uid.as_str(), p.qos), (UID, QosClass::BestEffort));
    }

    #[test]
    fn static_pod_uids_are_hashes() {
        let hash = "6e8c1ab1f1c3b5a2e4d7f9a0b1c2d3e4";
        let p = pod_of_cgroup_path(&format!("/kubepods/burstable/pod{hash}/c")).unwrap();
        assert_eq!(p.uid, hash);
    }

    #[test]
    fn not_pods() {
        for path in [
            "/",
            "/system.slice/containerd.service",
            "/kubepods",
            "/kubepods/besteffort",
            "/kubepods.slice/kubepods-besteffort.slice",
            "/kubepods/besteffort/podman",
            "/kubepods/besteffort/pod",
            "/kubepods/besteffort/pod--",
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1-2.slice",
            "/user.slice/pod1234/c",
        ] {
            assert_eq!(pod_of_cgroup_path(path), None, "{path}");
        }
    }

    #[test]
    fn qos_dir_names_follow_the_driver() {
        assert_eq!(
            qos_dir_name("kubepods", QosClass::Burstable).as_deref(),
            Some("burstable")
        );
        assert_eq!(
            qos_dir_name("kubepods.slice", QosClass::BestEffort).as_deref(),
            Some("kubepods-besteffort.slice")
        );
        assert_eq!(qos_dir_name("kubepods", QosClass::Guaranteed), None);
        assert_eq!(
            qos_of_dir("kubelet-kubepods.slice", "kubelet-kubepods-burstable.slice"),
            Some(QosClass::Burstable)
        );
        assert_eq!(qos_of_dir("kubepods", "kubepods-burstable.slice"), None);
    }
}
