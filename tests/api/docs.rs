//! The project explains itself: its files refer to nothing outside the
//! repository, and every relative link of README.md and docs/ leads to a file
//! that exists.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Text files of the project (sources, tests, benches, scripts, docs).
fn project_files() -> Vec<PathBuf> {
    let mut files = vec![
        PathBuf::from("README.md"),
        PathBuf::from("schema.graphql"),
        PathBuf::from("Cargo.toml"),
        PathBuf::from("build.rs"),
    ];
    for dir in [
        "src",
        "tests",
        "benches",
        "scripts",
        "docs",
        "examples",
        "migrations",
        ".ci",
    ] {
        walk(&Path::new(ROOT).join(dir), &mut files);
    }
    files
        .into_iter()
        .map(|f| {
            if f.is_absolute() {
                f
            } else {
                Path::new(ROOT).join(f)
            }
        })
        .filter(|f| f.is_file())
        .collect()
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            matches!(
                e,
                "rs" | "md" | "sh" | "sql" | "graphql" | "toml" | "json" | "py"
            )
        }) || path.file_name().is_some_and(|n| n == "run")
        {
            files.push(path);
        }
    }
}

#[test]
fn no_file_refers_to_documents_outside_the_repository() {
    // Spelt in pieces so that this file does not match itself.
    let outside = [
        ["SPEC", " section"].concat(),
        ["SPEC", ".md"].concat(),
        ["SPEC", " §"].concat(),
        ["shared", "/"].concat(),
    ];
    let mut found = Vec::new();
    for file in project_files() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if outside.iter().any(|needle| line.contains(needle.as_str())) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "references outside the repository:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_relative_link_of_the_docs_leads_to_a_file() {
    let mut pages = vec![Path::new(ROOT).join("README.md")];
    walk(&Path::new(ROOT).join("docs"), &mut pages);
    for topic in [
        "concepts.md",
        "configuration.md",
        "graphql.md",
        "cli.md",
        "events.md",
        "operations.md",
        "python-framework.md",
    ] {
        assert!(
            Path::new(ROOT).join("docs").join(topic).is_file(),
            "docs/{topic} is missing"
        );
    }
    let mut broken = Vec::new();
    for page in pages
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
    {
        let text = std::fs::read_to_string(page).unwrap();
        for link in text
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
        {
            if link.contains("://") || link.starts_with('#') || link.starts_with("mailto:") {
                continue;
            }
            let target = link.split('#').next().unwrap();
            let resolved = page.parent().unwrap().join(target);
            if !resolved.exists() {
                broken.push(format!("{}: ({link})", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
