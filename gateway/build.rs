//! Names the commit the binary was built from (`vxgate --version`): `git rev-parse` when the
//! source is a git checkout, else VXGATE_COMMIT from the environment, else "unknown".

fn main() {
    let commit = std::env::var("VXGATE_COMMIT").ok().or_else(|| {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|c| !c.is_empty())
    });
    println!(
        "cargo:rustc-env=VXGATE_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
    println!("cargo:rerun-if-env-changed=VXGATE_COMMIT");
    // a new commit (HEAD or the branch it points at) rebuilds this
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
}
