//! ReferenceGrant in the file source: typed and checked like the other kinds,
//! with errors naming the resource, the field and the fix, at a line.

use crate::config::file::load_str;

const BASE: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
"#;

fn grant(spec: &str) -> String {
    format!(
        "{BASE}---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: g, namespace: other}}\nspec:\n{spec}"
    )
}

const FROM: &str =
    "  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]\n";
const TO: &str = "  to: [{group: \"\", kind: Service}]\n";

#[test]
fn a_valid_grant_reaches_the_state() {
    let s = load_str("g.yaml", &grant(&format!("{FROM}{TO}"))).unwrap_or_else(|e| panic!("{e}"));
    let g = &s.reference_grants()[0];
    assert_eq!(g.key.to_string(), "other/g");
    assert_eq!(
        (g.from[0].kind.as_str(), g.from[0].namespace.as_str()),
        ("HTTPRoute", "shop")
    );
    assert_eq!(
        (g.to[0].kind.as_str(), g.to[0].name.as_deref()),
        ("Service", None)
    );
    // Entries for other controllers (a Gateway's Secrets) are valid too.
    let other = "  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: shop}]\n  to: [{group: \"\", kind: Secret, name: tls}]\n";
    assert!(load_str("g.yaml", &grant(other)).is_ok());
}

#[test]
fn bad_grants_name_the_field_and_the_fix() {
    for (spec, field, reason) in [
        (TO.to_owned(), "spec.from", "required field `from`"),
        (
            format!("  from: []\n{TO}"),
            "spec.from",
            "required: at least one",
        ),
        (
            format!("{FROM}  to: []\n"),
            "spec.to",
            "required: at least one",
        ),
        (
            format!(
                "  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: Shop_1}}]\n{TO}"
            ),
            "spec.from[0].namespace",
            "not a valid namespace name",
        ),
        (
            format!("  from: [{{group: \"Not A Group\", kind: HTTPRoute, namespace: shop}}]\n{TO}"),
            "spec.from[0].group",
            "not an API group",
        ),
        (
            format!("{FROM}  to: [{{group: \"\", kind: \"\"}}]\n"),
            "spec.to[0].kind",
            "not a kind",
        ),
        (
            format!("{FROM}  to: [{{group: \"\", kind: Service, name: Bad_Name}}]\n"),
            "spec.to[0].name",
            "leave it out to grant every object",
        ),
        (
            format!("{FROM}  to: [{{group: \"\", kind: Service, nmae: x}}]\n"),
            "spec.to[0].nmae",
            "unknown field `nmae`",
        ),
        (
            format!(
                "  from: [{}]\n{TO}",
                vec!["{group: g.io, kind: HTTPRoute, namespace: shop}"; 17].join(", ")
            ),
            "spec.from",
            "at most 16 entries (got 17)",
        ),
    ] {
        let errors = load_str("g.yaml", &grant(&spec)).expect_err(field);
        let e = errors
            .iter()
            .find(|e| e.field.as_deref() == Some(field))
            .unwrap_or_else(|| panic!("no error on {field}: {errors}"));
        let msg = e.to_string();
        assert!(msg.contains("ReferenceGrant other/g: "), "{msg}");
        assert!(msg.contains(reason), "{field}: {msg:?} lacks {reason:?}");
        assert!(e.line.is_some_and(|l| l >= 8), "{msg}");
    }
}

#[test]
fn a_grant_needs_its_apiversion_and_a_declared_namespace() {
    let wrong = grant(&format!("{FROM}{TO}")).replace("v1beta1", "v1");
    let errors = load_str("g.yaml", &wrong).expect_err("v1");
    assert!(
        errors
            .to_string()
            .contains("ReferenceGrant needs apiVersion gateway.networking.k8s.io/v1beta1"),
        "{errors}"
    );
    let undeclared =
        grant(&format!("{FROM}{TO}")).replace("namespace: other}", "namespace: nowhere}");
    let errors = load_str("g.yaml", &undeclared).expect_err("undeclared");
    assert!(
        errors
            .to_string()
            .contains("namespace \"nowhere\" is not declared"),
        "{errors}"
    );
}
