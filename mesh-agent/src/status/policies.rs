//! The status of Weft's policies (AuthorizationPolicy, TrafficPolicy):
//! `status.conditions[]` with `Accepted`, `True`/`Accepted` when the validator
//! the agents use accepts the policy, else `False`/`Invalid` with its messages.
//! Conditions of other types are kept. Pure: the caller gives the time.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::Value;

use super::conditions::Verdict;

const ACCEPTED: &str = "Accepted";

/// What a policy's status is computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyFacts {
    pub generation: Option<i64>,
    /// `Err(message)`: the validator refuses the policy (so every agent does).
    pub verdict: Result<(), String>,
    /// `status.conditions` as the API server has it.
    pub current: Vec<Value>,
}

/// The new `status.conditions` when they differ from the current ones, else `None`.
pub fn policy_conditions(
    facts: &PolicyFacts,
    now: &Time,
) -> Result<Option<Vec<Value>>, serde_json::Error> {
    let verdict = match &facts.verdict {
        Ok(()) => Verdict::yes(ACCEPTED, "Accepted", "valid: every agent applies it"),
        Err(message) => Verdict::no(ACCEPTED, "Invalid", message.clone()),
    };
    let ours = |c: &&Value| c.get("type").and_then(Value::as_str) == Some(ACCEPTED);
    let previous: Vec<Condition> = facts
        .current
        .iter()
        .filter(ours)
        .map(|c| serde_json::from_value(c.clone()))
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    let condition = verdict.condition(facts.generation, &previous, now);
    if previous.as_slice() == std::slice::from_ref(&condition) {
        return Ok(None);
    }
    let mut conditions: Vec<Value> = facts.current.iter().filter(|c| !ours(c)).cloned().collect();
    conditions.push(serde_json::to_value(&condition)?);
    Ok(Some(conditions))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::status::conditions::tests::at;

    fn facts(verdict: Result<(), String>) -> PolicyFacts {
        PolicyFacts {
            generation: Some(2),
            verdict,
            current: Vec::new(),
        }
    }

    #[test]
    fn a_valid_policy_is_accepted() {
        let c = policy_conditions(&facts(Ok(())), &at(100))
            .unwrap()
            .unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            (
                &c[0]["type"],
                &c[0]["status"],
                &c[0]["reason"],
                &c[0]["observedGeneration"]
            ),
            (
                &json!("Accepted"),
                &json!("True"),
                &json!("Accepted"),
                &json!(2)
            )
        );
    }

    #[test]
    fn an_invalid_policy_is_refused_with_the_validators_message() {
        let msg = "spec.rules[0].from[0].source.ipBlocks[0]: not a CIDR";
        let c = policy_conditions(&facts(Err(msg.into())), &at(100))
            .unwrap()
            .unwrap();
        assert_eq!(
            (&c[0]["status"], &c[0]["reason"]),
            (&json!("False"), &json!("Invalid"))
        );
        assert_eq!(c[0]["message"], msg);
    }

    #[test]
    fn an_unchanged_status_is_not_rewritten() {
        let mut f = facts(Ok(()));
        f.current = policy_conditions(&f, &at(100)).unwrap().unwrap();
        assert_eq!(policy_conditions(&f, &at(200)).unwrap(), None);
        // Fixed, then broken: the transition time moves.
        f.verdict = Err("bad".into());
        let c = policy_conditions(&f, &at(300)).unwrap().unwrap();
        assert_eq!(c[0]["lastTransitionTime"], "1970-01-01T00:05:00Z");
    }

    #[test]
    fn other_conditions_are_kept() {
        let theirs = json!({"type": "Audited", "status": "True", "reason": "X", "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"});
        let mut f = facts(Ok(()));
        f.current = vec![theirs.clone()];
        let c = policy_conditions(&f, &at(100)).unwrap().unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], theirs);
        assert_eq!(c[1]["type"], "Accepted");
    }
}
