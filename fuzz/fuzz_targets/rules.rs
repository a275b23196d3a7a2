//! `require` rules against arbitrary claims.
//!
//! Input: `rules JSON \n claims JSON [\n param value]`. The rules JSON is a
//! list of `{"claim": path, "any_of"|"all_of": [..]}` or `{"claim", "equals"}`
//! objects (the shape the config loader produces); invalid ones are skipped.
//! The path parameter `room` gets the third line.
//!
//! Oracles: no panic; a rule list that passes keeps passing when a rule is
//! removed (rules are a conjunction); an empty rule list always passes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wsgate::config::{RequireRule, RuleOp};
use wsgate::route::{lookup_claim, Params, Rules};

fn rule(v: &Value) -> Option<RequireRule> {
    let claim = v.get("claim")?.as_str()?.to_owned();
    let list = |k: &str| -> Option<Vec<String>> {
        v.get(k)?
            .as_array()?
            .iter()
            .map(|x| x.as_str().map(str::to_owned))
            .collect()
    };
    let op = if let Some(l) = list("any_of") {
        RuleOp::AnyOf(l)
    } else if let Some(l) = list("all_of") {
        RuleOp::AllOf(l)
    } else {
        RuleOp::Equals(v.get("equals")?.clone())
    };
    Some(RequireRule { claim, op })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let rules_text = lines.next().unwrap_or("");
    let claims_text = lines.next().unwrap_or("{}");
    let room = lines.next();

    let rules: Vec<RequireRule> = match serde_json::from_str::<Value>(rules_text) {
        Ok(Value::Array(items)) => items.iter().filter_map(rule).take(8).collect(),
        Ok(v) => rule(&v).into_iter().collect(),
        Err(_) => return,
    };
    let Ok(claims) = serde_json::from_str::<Value>(claims_text) else {
        return;
    };
    let mut params = Params::new();
    if let Some(room) = room {
        params.push("room", room);
    }

    for r in &rules {
        let _ = lookup_claim(&claims, &r.claim);
    }
    let all = Rules::compile(&rules);
    let ok = all.check(&claims, &params).is_ok();
    assert!(Rules::compile(&[]).check(&claims, &params).is_ok());
    if ok {
        for skip in 0..rules.len() {
            let fewer: Vec<RequireRule> = rules
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, r)| r.clone())
                .collect();
            assert!(
                Rules::compile(&fewer).check(&claims, &params).is_ok(),
                "dropping rule {skip} turned a pass into a failure"
            );
        }
    } else if let Err(f) = all.check(&claims, &params) {
        assert!(f.index < rules.len());
        // Each rule alone: the reported one fails on its own.
        let alone = Rules::compile(&rules[f.index..=f.index]);
        assert!(alone.check(&claims, &params).is_err(), "reported rule passes alone");
    }
});
