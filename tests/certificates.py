"""Throwaway certificates for TLS tests: a private CA and certificates for 127.0.0.1 it signs (openssl on PATH)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def openssl(folder: Path, *args: str) -> None:
    """Run openssl in folder; fail on its failure."""
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


def authority(folder: Path) -> Path:
    """ca.pem and ca.key in folder: a CA valid for a day; its certificate's path."""
    openssl(folder, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=switchyard-test-ca")
    return folder / "ca.pem"


def certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """name.pem and name.key, for 127.0.0.1, signed by folder's CA; their paths."""
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(folder, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
    openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "1", "-extfile", "san.ext")
    return folder / f"{name}.pem", folder / f"{name}.key"
