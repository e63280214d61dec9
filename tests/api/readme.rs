//! The README's curl walkthrough, run as written (every ```sh block, in order, one bash script)
//! against a fresh server, so the documentation cannot rot.

use crate::helpers::spawn_app;

fn walkthrough_script() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut script = String::from("set -euo pipefail\n");
    let mut in_block = false;
    for line in readme.lines() {
        if in_block && line.trim_start().starts_with("```") {
            in_block = false;
        } else if in_block {
            script.push_str(line);
            script.push('\n');
        } else if line.trim() == "```sh" {
            in_block = true;
        }
    }
    script
}

#[tokio::test]
async fn the_readme_walkthrough_works_as_written() {
    let script = walkthrough_script();
    assert!(
        script.contains("api/v1/jobs"),
        "README has no walkthrough blocks"
    );
    let app = spawn_app().await;
    let output = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("QUANTD", &app.address)
        .output()
        .await
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "walkthrough failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // Spot-check what the walkthrough printed.
    assert!(stdout.contains("\"succeeded\""), "{stdout}");
    assert!(stdout.contains("\"int-quantized\""), "{stdout}");
    assert!(stdout.contains("/problems/unknown-scheme"), "{stdout}");
    // The comment beside that call in the README shows the detail the server really gives.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let detail = format!(
        "known schemes: {}",
        quantd::jobs::spec::KNOWN_SCHEMES.join(", ")
    );
    assert!(
        readme.contains(&detail),
        "README's unknown-scheme example is stale: expected '{detail}'"
    );
    assert!(
        stdout.contains("\n204\n"),
        "the delete should answer 204: {stdout}"
    );
    app.stop().await;
}
