//! YAML in and out (serde-saphyr: maintained, panic-free, with parse budgets).
//!
//! Booleans are YAML 1.2's `true`/`false` only, so `name: N` or `value: no` stay strings, as
//! whoever wrote them meant; numbers with a leading zero (`defaultMode: 0644`) are octal, as
//! kubectl reads them.

use serde::Serialize;
use serde::de::DeserializeOwned;

fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    o.legacy_octal_numbers = true;
    o
}

/// One YAML (or JSON) document.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_saphyr::from_str_with_options(text, options()).map_err(|e| message(&e.to_string()))
}

/// Every non-empty document of a stream, in order.
pub fn documents<T: DeserializeOwned>(text: &str) -> Result<Vec<T>, String> {
    serde_saphyr::from_multiple_with_options(text, options()).map_err(|e| message(&e.to_string()))
}

/// The parser's message, with advice meant for a program using the library turned into
/// advice for whoever wrote the YAML.
fn message(error: &str) -> String {
    error.replace(
        ", set DuplicateKeyPolicy in Options if acceptable",
        " (a key may appear once in a map: remove or merge the repeated one)",
    )
}

/// One document as YAML, ending in a newline.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, String> {
    serde_saphyr::to_string(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_duplicate_key_gets_advice_for_the_author_not_the_library_user() {
        let e = super::from_str::<Value>("policy: enabled\npolicy: disabled\n").unwrap_err();
        assert!(e.contains("duplicate mapping key: policy"), "{e}");
        assert!(e.contains("remove or merge the repeated one"), "{e}");
        assert!(!e.contains("DuplicateKeyPolicy"), "{e}");
    }

    use serde_json::{Value, json};

    #[test]
    fn yaml_1_1_booleans_stay_strings_and_octal_modes_are_numbers() {
        let v: Value = super::from_str("a: N\nb: no\nc: true\nmode: 0644\n").unwrap();
        assert_eq!(v, json!({"a": "N", "b": "no", "c": true, "mode": 420}));
    }

    #[test]
    fn strings_that_look_like_other_things_survive_a_round_trip() {
        let v = json!({"a": "true", "b": "0644", "c": "N", "d": "1.0", "e": "", "f": "null", "g": "- x\n- y"});
        let text = super::to_string(&v).unwrap();
        assert_eq!(super::from_str::<Value>(&text).unwrap(), v, "{text}");
    }
}
