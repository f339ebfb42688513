//! The public error-code table in docs/errors.md cannot drift from the code.

use spinpay_core::error::ERROR_CODES;

#[test]
fn every_error_code_is_documented_with_its_status_type_and_meaning() {
    // Reads docs/errors.md and expects one row per code with the same status, type and
    // meaning.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md");
    let doc = std::fs::read_to_string(path).expect("docs/errors.md exists");
    for (code, status, error_type, meaning) in ERROR_CODES {
        let row = format!("| `{code}` | {status} | `{error_type}` | {meaning} |");
        assert!(doc.contains(&row), "docs/errors.md lacks the row {row}");
    }
    let documented = doc.lines().filter(|l| l.starts_with("| `")).count();
    assert_eq!(
        documented,
        ERROR_CODES.len(),
        "docs/errors.md has rows for codes that do not exist"
    );
}
