"""A private Dovecot IMAP server on loopback for tests, benchmarks and the demo.

Everything one instance needs (configuration, sockets, state, log, certificates, users and
their Maildirs) lives under a root directory chosen by the caller, so it never touches
/etc/dovecot or the system's Dovecot and goes away with the directory. It listens on two free
loopback ports: plain IMAP offering STARTTLS, and implicit TLS.

Dovecot 2.3 has rules that shape the configuration written here:

* Login processes refuse to run as root, and mail processes refuse uid 0 whatever
  first_valid_uid says. Started as root, the instance keeps its internal services as root
  (so they can read files below a private 0700 directory such as pytest's), runs login
  processes as an unprivileged user chrooted into its login directory, and accesses mail as
  ``nobody`` chrooted into the homes directory. chroot() happens while still root, so the
  unprivileged processes never need search permission on the root directory's ancestors.
* Started as a normal user nothing can change uid or chroot, so every service runs as that
  user and every default chroot is cleared.
* A passwd-file is re-read only when a lookup happens in a later second than the previous
  one, so a shared file misses a user added within a second of someone else's login. Each
  user gets a file of their own instead (the path contains %u), which Dovecot opens on the
  first lookup of that user.
* Each failed login makes anvil delay every later login from the same address, up to
  15 s, and every client here is 127.0.0.1. Giving anvil's penalty socket mode 0 stops
  Dovecot from creating it, which switches the penalty off, so a test that checks a wrong
  password does not slow down the tests after it. A failed login still takes up to half a
  second: Dovecot answers failures from a queue it flushes twice a second.
"""

from __future__ import annotations

import base64
import contextlib
import grp
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import imapclient
from imapclient import imap_utf7

SYSTEM_DOVECOT = Path("/usr/sbin/dovecot")

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0
IMAP_TIMEOUT = 30.0

# sockaddr_un holds 108 bytes; Dovecot's longest socket name below base_dir is about 25.
_MAX_BASE_DIR_LENGTH = 108 - 1 - 32

# Dovecot's config syntax has no quoting that works everywhere a path appears (passwd-file
# args are split on spaces, % starts a variable, # a comment, : separates passwd fields).
_UNSAFE_PATH_CHARS = re.compile(r"""[\s%#:"'\\{}<>]""")
_EMAIL = re.compile(r"[a-z0-9][a-z0-9._+-]*@[a-z0-9][a-z0-9.-]*")
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")

_fill_batches = itertools.count()


class DovecotError(RuntimeError):
    """Dovecot could not be configured, started or talked to; the message says why."""


class DovecotNotInstalled(DovecotError):
    """No dovecot binary was found; scripts/ensure-dovecot installs Debian's dovecot-imapd."""


@dataclass(frozen=True)
class MailUser:
    """A mailbox account on a test server: the address is also the IMAP login."""

    email: str
    password: str


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS server: clients trust ``ca_file``, the server uses cert and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def find_dovecot() -> Path | None:
    """Locate the dovecot binary: Debian's /usr/sbin/dovecot first, then PATH."""
    if SYSTEM_DOVECOT.is_file() and os.access(SYSTEM_DOVECOT, os.X_OK):
        return SYSTEM_DOVECOT
    found = shutil.which("dovecot")
    return Path(found) if found else None


def make_tls_files(
    directory: Path, hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1")
) -> TlsFiles:
    """Create (or reuse) a private CA and a server certificate for ``hosts`` in ``directory``.

    A CA plus a leaf signed by it, rather than one self-signed certificate, keeps clients
    with strict verification (Python 3.13's default VERIFY_X509_STRICT among them) happy.
    Uses the ``cryptography`` package when importable, else the ``openssl`` command.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    if all(path.is_file() for path in (files.ca_file, files.cert_file, files.key_file)):
        return files
    if not _make_tls_files_with_cryptography(files, hosts):
        _make_tls_files_with_openssl(files, hosts)
    files.key_file.chmod(0o600)
    return files


def _make_tls_files_with_cryptography(files: TlsFiles, hosts: Sequence[str]) -> bool:
    try:
        import ipaddress
        from datetime import UTC, datetime, timedelta

        from cryptography import x509  # type: ignore[import-not-found,unused-ignore]
        from cryptography.hazmat.primitives import (  # type: ignore[import-not-found,unused-ignore]
            hashes,
            serialization,
        )
        from cryptography.hazmat.primitives.asymmetric import (  # type: ignore[import-not-found,unused-ignore]
            ec,
        )
        from cryptography.x509.oid import (  # type: ignore[import-not-found,unused-ignore]
            ExtendedKeyUsageOID,
            NameOID,
        )
    except ImportError:
        return False

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "postdesk test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    names: list[object] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    _write_private(
        files.key_file,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    files.cert_file.write_bytes(cert.public_bytes(pem))
    files.ca_file.write_bytes(ca_cert.public_bytes(pem))
    return True


def _make_tls_files_with_openssl(files: TlsFiles, hosts: Sequence[str]) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise DovecotError(
            "cannot create a test certificate: neither the cryptography package nor the "
            "openssl command is available"
        )
    alt_names = ",".join(f"IP:{host}" if _is_ip_address(host) else f"DNS:{host}" for host in hosts)
    # A config of our own keeps the result independent of the system's openssl.cnf.
    config = (
        "[req]\n"
        "distinguished_name = dn\n"
        "prompt = no\n"
        "[dn]\n"
        "CN = postdesk test\n"
        "[ca]\n"
        "basicConstraints = critical, CA:TRUE, pathlen:0\n"
        "keyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\n"
        "[leaf]\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyAgreement\n"
        "extendedKeyUsage = serverAuth\n"
        f"subjectAltName = {alt_names}\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid:always\n"
    )
    with tempfile.TemporaryDirectory(prefix="postdesk-tls-") as scratch_dir:
        scratch = Path(scratch_dir)
        cnf = scratch / "openssl.cnf"
        cnf.write_text(config, encoding="ascii")
        ca_key = scratch / "ca-key.pem"
        csr = scratch / "leaf.csr"
        ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        make_ca = [openssl, "req", "-x509", *ec_key, "-config", str(cnf), "-extensions", "ca"]
        make_ca += ["-subj", "/CN=postdesk test CA", "-days", "3650"]
        make_ca += ["-keyout", str(ca_key), "-out", str(files.ca_file)]
        _run(make_ca, "create the test CA")
        make_csr = [
            openssl,
            "req",
            "-new",
            *ec_key,
            "-config",
            str(cnf),
            "-subj",
            f"/CN={hosts[0]}",
        ]
        make_csr += ["-keyout", str(files.key_file), "-out", str(csr)]
        _run(make_csr, "create the test server key")
        sign = [openssl, "x509", "-req", "-in", str(csr), "-CA", str(files.ca_file)]
        sign += ["-CAkey", str(ca_key), "-set_serial", str(secrets.randbits(63)), "-sha256"]
        sign += ["-days", "825", "-extfile", str(cnf), "-extensions", "leaf"]
        sign += ["-out", str(files.cert_file)]
        _run(sign, "sign the test server certificate")


class Dovecot:
    """A throwaway Dovecot IMAP server whose files all live under ``root``.

    Use it as a context manager, or call start() and stop(). Each test should add its own
    user with add_user(), so tests never share a mailbox. The ports are picked when the
    server first starts and reused if it is restarted, so a client can reconnect.
    """

    def __init__(
        self, root: Path, host: str = "127.0.0.1", *, oauth2_introspection_url: str = ""
    ) -> None:
        self.root = Path(os.path.abspath(root))
        # With a URL, XOAUTH2 and OAUTHBEARER logins are offered too: Dovecot POSTs the
        # bearer token there (RFC 7662 introspection) and lets the user in when the JSON
        # answer has "active": true and "username" equal to the login name.
        self.oauth2_introspection_url = oauth2_introspection_url
        if _UNSAFE_PATH_CHARS.search(str(self.root)):
            raise ValueError(
                f"Dovecot root {self.root} contains a character its configuration cannot "
                "express (whitespace, %, #, :, quotes, backslash or braces)"
            )
        self.host = host
        self.config_path = self.root / "dovecot.conf"
        self.log_path = self.root / "dovecot.log"
        self.stderr_path = self.root / "dovecot.stderr"
        self._tls = TlsFiles(
            self.root / "tls" / "ca.pem",
            self.root / "tls" / "cert.pem",
            self.root / "tls" / "key.pem",
        )
        self._passwd_dir = self.root / "passwd.d"
        self._homes = self.root / "home"
        self._identity = _Identity.current()
        self._port = 0
        self._ssl_port = 0
        self._base_dir: Path | None = None
        self._own_base_dir = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes], float], Dovecot] | None = None
        self._users_lock = threading.Lock()
        self._log_offset = 0

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The plain IMAP port (STARTTLS offered)."""
        return self._require_port(self._port)

    @property
    def ssl_port(self) -> int:
        """The implicit-TLS IMAP port."""
        return self._require_port(self._ssl_port)

    @property
    def ca_file(self) -> Path:
        """PEM of the CA that signed the server certificate; what a client should trust."""
        return self._tls.ca_file

    @property
    def cert_file(self) -> Path:
        """The server certificate (PEM), also usable by other local test servers."""
        return self._tls.cert_file

    @property
    def key_file(self) -> Path:
        """The server certificate's private key (PEM)."""
        return self._tls.key_file

    @property
    def running(self) -> bool:
        """Whether the Dovecot master process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def ssl_context(self) -> ssl.SSLContext:
        """A client SSLContext that trusts this server's certificate and checks hostnames."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start Dovecot and return once both ports answer with an IMAP greeting.

        Raises DovecotNotInstalled without a dovecot binary, and DovecotError (with the tail
        of the log) if it does not come up within ``timeout`` seconds.
        """
        if self.running:
            return
        binary = find_dovecot()
        if binary is None:
            raise DovecotNotInstalled(
                "dovecot is not installed (looked for /usr/sbin/dovecot and on PATH); "
                "run scripts/ensure-dovecot or install Debian's dovecot-imapd"
            )
        _check_version(binary)
        for directory in (self.root, self._passwd_dir, self._homes, self.root / "state"):
            directory.mkdir(parents=True, exist_ok=True)
        self._tls = make_tls_files(self.root / "tls", _certificate_hosts(self.host))
        self._base_dir, self._own_base_dir = self._choose_base_dir()
        self._stop_stale_instance()

        attempts = 3
        for attempt in range(1, attempts + 1):
            if attempt > 1 or not (self._port and _port_is_free(self.host, self._port)):
                self._port = _free_port(self.host)
            if attempt > 1 or not (self._ssl_port and _port_is_free(self.host, self._ssl_port)):
                self._ssl_port = _free_port(self.host, avoid=self._port)
            self._write_config(binary)
            try:
                self._launch(binary, timeout)
                return
            except _PortTaken:
                # Another process grabbed a port between our probe and Dovecot's bind.
                self.stop()
                if attempt == attempts:
                    raise DovecotError(
                        f"Dovecot could not bind free ports after {attempts} attempts"
                        + self._diagnostics()
                    ) from None
            except BaseException:
                self.stop()
                raise

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop Dovecot and wait for all its processes to exit; never raises."""
        finalizer, self._finalizer = self._finalizer, None
        proc, self._proc = self._proc, None
        if finalizer is not None:
            finalizer.detach()
        if proc is not None:
            _terminate(proc, timeout)
        self._cleanup_base_dir()

    def restart(self) -> None:
        """Stop and start again, keeping users, mail and (while still free) the ports."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self._port} ssl_port={self._ssl_port}" if self.running else "stopped"
        return f"<Dovecot {self.root} {state}>"

    # -- users --------------------------------------------------------------------------

    def add_user(self, email: str | None = None, password: str | None = None) -> MailUser:
        """Create a mail account with an empty INBOX; works while the server runs.

        Without ``email`` a unique ``support-<hex>@example.com`` is made up; without
        ``password`` a random one. Addresses are lower-cased, as Dovecot does at login.
        """
        if password is None:
            password = secrets.token_urlsafe(12)
        if "\n" in password or "\0" in password:
            raise ValueError("a password cannot contain a newline or NUL")
        with self._users_lock:
            self._passwd_dir.mkdir(parents=True, exist_ok=True)
            if email is None:
                while True:
                    email = f"support-{secrets.token_hex(5)}@example.com"
                    if not (self._passwd_dir / email).exists():
                        break
            email = email.lower()
            if not _EMAIL.fullmatch(email) or ".." in email:
                raise ValueError(
                    f"{email!r} is not a plain address (letters, digits, . _ + - and one @)"
                )
            if (self._passwd_dir / email).exists():
                raise ValueError(f"user {email} already exists on this test server")
            user = MailUser(email, password)
            self._create_maildir(self._maildir(user))
            # PLAIN.b64 lets any password through the colon-separated passwd-file format.
            secret = base64.b64encode(password.encode("utf-8")).decode("ascii")
            ident = self._identity
            # Not a Path: pathlib would drop the "/./" that marks where the chroot ends.
            home = f"{self._homes}/./{email}" if ident.privileged else f"{self._homes}/{email}"
            line = f"{email}:{{PLAIN.b64}}{secret}:{ident.mail_uid}:{ident.mail_gid}::{home}::\n"
            # Written whole and renamed into place, so auth never reads half a line.
            scratch = self._passwd_dir / f".{email}.tmp"
            _write_private(scratch, line.encode("utf-8"))
            scratch.replace(self._passwd_dir / email)
            return user

    # -- IMAP helpers -------------------------------------------------------------------

    def client(self, user: MailUser) -> imapclient.IMAPClient:
        """An IMAPClient logged in as ``user`` over plain IMAP; the caller logs it out."""
        conn = imapclient.IMAPClient(self.host, port=self.port, ssl=False, timeout=IMAP_TIMEOUT)
        try:
            if user.password.isascii():
                conn.login(user.email, user.password)
            else:
                # imaplib's LOGIN only sends ASCII; AUTHENTICATE PLAIN carries UTF-8.
                conn.plain_login(user.email, user.password)
        except BaseException:
            with contextlib.suppress(Exception):
                conn.shutdown()
            raise
        return conn

    def append(
        self,
        user: MailUser,
        raw: bytes,
        folder: str = "INBOX",
        flags: Sequence[str | bytes] = (),
    ) -> int:
        """APPEND one message and return the UID the server gave it."""
        with self._session(user) as conn:
            response: bytes = conn.append(folder, raw, flags=tuple(flags))
        match = _APPENDUID.search(response)
        if match is None:
            raise DovecotError(f"APPEND to {folder!r} returned no APPENDUID: {response!r}")
        return int(match.group(2))

    def fill(self, user: MailUser, messages: Iterable[bytes], folder: str = "INBOX") -> int:
        """Load many messages into an existing folder quickly; returns how many were added.

        Messages are written straight into the folder's Maildir (through tmp/ into new/,
        as any Maildir delivery agent does) and a SELECT then makes Dovecot index them.
        UIDs follow the order of ``messages``. Folders whose Maildir cannot be located
        fall back to a MULTIAPPEND, which is several times slower.
        """
        with self._session(user) as conn:
            if folder.upper() != "INBOX" and not conn.folder_exists(folder):
                raise DovecotError(f"folder {folder!r} does not exist for {user.email}")
            before = int(conn.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"])
            maildir = self._maildir(user, folder)
            if (maildir / "tmp").is_dir() and (maildir / "new").is_dir():
                added = self._deliver(maildir, messages)
            else:
                added = 0
                pending = iter(messages)
                # Batches bound the size of one command and the memory it holds.
                while batch := list(itertools.islice(pending, 1000)):
                    conn.multiappend(folder, batch)
                    added += len(batch)
            exists = int(conn.select_folder(folder)[b"EXISTS"])
            conn.close_folder()
        if exists < before + added:
            raise DovecotError(
                f"fill wrote {added} messages to {folder!r} but Dovecot sees {exists - before}"
                + self._diagnostics()
            )
        return added

    def create_folder(self, user: MailUser, name: str) -> None:
        """CREATE a folder for ``user``."""
        with self._session(user) as conn:
            conn.create_folder(name)

    def delete_folder(self, user: MailUser, name: str) -> None:
        """DELETE a folder (and its messages) for ``user``."""
        with self._session(user) as conn:
            conn.delete_folder(name)

    def uidvalidity(self, user: MailUser, folder: str = "INBOX") -> int:
        """The folder's UIDVALIDITY, from STATUS."""
        with self._session(user) as conn:
            return int(conn.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])

    def message_count(self, user: MailUser, folder: str = "INBOX") -> int:
        """How many messages the folder holds, from STATUS."""
        with self._session(user) as conn:
            return int(conn.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"])

    # -- internals ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _session(self, user: MailUser) -> Iterator[imapclient.IMAPClient]:
        conn = self.client(user)
        try:
            yield conn
        finally:
            try:
                conn.logout()
            except Exception:
                with contextlib.suppress(Exception):
                    conn.shutdown()

    def _require_port(self, port: int) -> int:
        if not port:
            raise DovecotError("the Dovecot test server has not been started")
        return port

    def _maildir(self, user: MailUser, folder: str = "INBOX") -> Path:
        root = self._homes / user.email / "Maildir"
        if folder.upper() == "INBOX":
            return root
        # Maildir++ keeps every folder as "." + its name in modified UTF-7, with the
        # hierarchy separator "." unchanged.
        encoded: bytes = imap_utf7.encode(folder)
        return root / ("." + encoded.decode("ascii"))

    def _create_maildir(self, maildir: Path) -> None:
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        if self._identity.privileged:
            home = maildir.parent
            for path in (home, maildir, *(maildir / sub for sub in ("cur", "new", "tmp"))):
                os.chown(path, self._identity.mail_uid, self._identity.mail_gid)

    def _deliver(self, maildir: Path, messages: Iterable[bytes]) -> int:
        # Dovecot gives new files UIDs sorted by the seconds and then the M<microseconds>
        # field of their names; numbering both from the loop index keeps the caller's order.
        stamp = int(time.time())
        unique = f"P{os.getpid()}Q{next(_fill_batches)}{secrets.token_hex(3)}.postdesk"
        # Plain strings: pathlib's joins would cost more than the system calls here.
        tmp, new = f"{maildir}/tmp/", f"{maildir}/new/"
        chown = self._identity.privileged
        uid, gid = self._identity.mail_uid, self._identity.mail_gid
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        count = 0
        for index, raw in enumerate(messages):
            seconds, micros = divmod(index, 1_000_000)
            name = f"{stamp + seconds}.M{micros}{unique}"
            fd = os.open(tmp + name, flags, 0o600)
            try:
                if chown:
                    os.fchown(fd, uid, gid)
                view = memoryview(raw)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            # Written in tmp/ and renamed, so a client syncing meanwhile never sees half a file.
            os.rename(tmp + name, new + name)
            count += 1
        return count

    def _choose_base_dir(self) -> tuple[Path, bool]:
        preferred = self.root / "run"
        if len(str(preferred)) <= _MAX_BASE_DIR_LENGTH:
            preferred.mkdir(exist_ok=True)
            return preferred, False
        # Socket paths would not fit in sockaddr_un; use a short private directory instead.
        parent = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
        if len(parent) > 40:
            parent = "/tmp"
        short = Path(tempfile.mkdtemp(prefix="pdv-", dir=parent))
        short.chmod(0o755)
        return short, True

    def _cleanup_base_dir(self) -> None:
        if self._own_base_dir and self._base_dir is not None:
            shutil.rmtree(self._base_dir, ignore_errors=True)
            self._base_dir = None
            self._own_base_dir = False

    def _stop_stale_instance(self) -> None:
        """End a Dovecot left running on this root by a process that died without stop()."""
        assert self._base_dir is not None
        try:
            pid = int((self._base_dir / "master.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if str(self.config_path).encode() not in cmdline:
            return
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        _signal_group(pid, signal.SIGKILL)

    def _write_config(self, binary: Path) -> None:
        assert self._base_dir is not None
        text = _render_config(
            base_dir=self._base_dir,
            root=self.root,
            host=self.host,
            port=self._port,
            ssl_port=self._ssl_port,
            tls=self._tls,
            passwd_dir=self._passwd_dir,
            homes=self._homes,
            log_path=self.log_path,
            identity=self._identity,
            oauth2_conf=self._write_oauth2_conf(),
        )
        self.config_path.write_text(text, encoding="utf-8")
        if not self._identity.privileged:
            # Unprivileged processes cannot chroot, so clear every chroot Dovecot would
            # otherwise apply; asking Dovecot itself keeps this right across 2.3 releases.
            services = _services_with_chroot(binary, self.config_path)
            if services:
                overrides = "".join(f"service {name} {{\n  chroot =\n}}\n" for name in services)
                self.config_path.write_text(text + overrides, encoding="utf-8")

    def _write_oauth2_conf(self) -> Path | None:
        """The oauth2 passdb's settings file, when an introspection URL is configured."""
        url = self.oauth2_introspection_url
        if not url:
            return None
        if any(c in url for c in "\n\"' "):
            raise ValueError(f"{url!r} cannot be written into Dovecot's configuration")
        path = self.root / "dovecot-oauth2.conf.ext"
        path.write_text(
            f"introspection_mode = post\nintrospection_url = {url}\n"
            "username_attribute = username\nactive_attribute = active\nactive_value = true\n",
            encoding="utf-8",
        )
        return path

    def _launch(self, binary: Path, timeout: float) -> None:
        try:
            self._log_offset = self.log_path.stat().st_size
        except FileNotFoundError:
            self._log_offset = 0
        with open(self.stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                [str(binary), "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                # Its own process group, so stop() can reach every child Dovecot forks.
                start_new_session=True,
            )
        self._proc = proc
        # Ends the instance at interpreter exit if nobody called stop().
        self._finalizer = weakref.finalize(self, _terminate, proc, STOP_TIMEOUT)
        self._wait_until_ready(proc, timeout)

    def _wait_until_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        started = time.monotonic()
        context = ssl.create_default_context(cafile=str(self._tls.ca_file))
        last_problem = "no answer yet"
        while True:
            if proc.poll() is not None:
                if "Address already in use" in "\n".join(self._startup_lines()):
                    raise _PortTaken
                raise DovecotError(
                    f"Dovecot exited with status {proc.returncode} while starting"
                    + self._diagnostics()
                )
            try:
                _expect_greeting(self.host, self._port, None)
                _expect_greeting(self.host, self._ssl_port, context)
                return
            except (OSError, DovecotError) as exc:
                last_problem = str(exc) or type(exc).__name__
            elapsed = time.monotonic() - started
            # A healthy instance answers within a fraction of a second; one that is still
            # silent after two and has logged errors (a bad certificate, say) will not
            # recover, so there is no point waiting out the whole timeout.
            if elapsed >= timeout or (elapsed >= 2.0 and _problems(self._startup_lines())):
                raise DovecotError(
                    f"Dovecot did not answer IMAP on {self.host}:{self._port} and "
                    f"{self.host}:{self._ssl_port} after {elapsed:.1f}s ({last_problem})"
                    + self._diagnostics()
                )
            time.sleep(0.05)

    def _startup_lines(self) -> list[str]:
        """What Dovecot printed since the current start: its stderr and new log lines."""
        lines: list[str] = []
        with contextlib.suppress(OSError):
            lines += self.stderr_path.read_text(encoding="utf-8", errors="replace").splitlines()
        with contextlib.suppress(OSError), open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            lines += log.read().decode("utf-8", "replace").splitlines()
        return lines

    def _diagnostics(self) -> str:
        lines = self._startup_lines()
        if not lines:
            return f"\n(nothing in {self.stderr_path} or {self.log_path})"
        text = ""
        problems = _problems(lines)
        if problems:
            text += "\n--- errors Dovecot reported ---\n" + "\n".join(problems[-10:])
        text += f"\n--- last lines of {self.stderr_path} and {self.log_path} ---\n"
        return text + "\n".join(lines[-10:])


def _problems(lines: Iterable[str]) -> list[str]:
    """The distinct error lines in Dovecot output, ignoring per-connection details."""
    seen: dict[str, str] = {}
    for line in lines:
        if re.search(r"\b(Fatal|Panic|Error):", line):
            key = re.sub(r"^\w{3} \d+ [\d:]+ |<[^>]*>|session=\S*|mpid=\d+|pid=\d+", "", line)
            seen.pop(key, None)
            seen[key] = line
    return list(seen.values())


class _PortTaken(Exception):
    """Dovecot lost the race for a port we had just found free."""


@dataclass(frozen=True)
class _Identity:
    """Which OS users the instance's processes and mail files run as."""

    privileged: bool
    internal_user: str
    internal_group: str
    login_user: str
    mail_uid: int
    mail_gid: int

    @classmethod
    def current(cls) -> _Identity:
        if os.geteuid() == 0:
            try:
                mail = pwd.getpwnam("nobody")
            except KeyError:
                raise DovecotError(
                    "running as root, the test Dovecot needs the 'nobody' user to own mail"
                ) from None
            login = _first_user("dovenull", "nobody")
            return cls(True, "root", grp.getgrgid(0).gr_name, login, mail.pw_uid, mail.pw_gid)
        uid, gid = os.geteuid(), os.getegid()
        try:
            user = pwd.getpwuid(uid).pw_name
            group = grp.getgrgid(gid).gr_name
        except KeyError:
            raise DovecotError(
                f"uid {uid} / gid {gid} have no passwd/group entry, which Dovecot needs"
            ) from None
        return cls(False, user, group, user, uid, gid)


def _first_user(*names: str) -> str:
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise DovecotError(f"none of the users {', '.join(names)} exists for Dovecot's logins")


def _render_config(
    *,
    base_dir: Path,
    root: Path,
    host: str,
    port: int,
    ssl_port: int,
    tls: TlsFiles,
    passwd_dir: Path,
    homes: Path,
    log_path: Path,
    identity: _Identity,
    oauth2_conf: Path | None = None,
) -> str:
    privileged = identity.privileged
    mechanisms = "plain login"
    oauth2_passdb = ""
    if oauth2_conf is not None:
        mechanisms += " xoauth2 oauthbearer"
        oauth2_passdb = (
            "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
            f"  args = {oauth2_conf}\n}}\n"
        )
    # In the privileged layout the passwd-file home is "<homes>/./<user>": Dovecot chroots
    # to <homes> before dropping to the mail uid, which only has to reach its own home.
    chroot_setting = f"valid_chroot_dirs = {homes}\n" if privileged else ""
    login_chroot = "" if privileged else "  chroot =\n"
    return f"""\
# Written by postdesk.testing.dovecot for a throwaway test server; rewritten on each start.
base_dir = {base_dir}
state_dir = {root / "state"}
instance_name = postdesk-{secrets.token_hex(4)}
log_path = {log_path}
verbose_proctitle = yes
protocols = imap
listen = {host}

ssl = yes
ssl_cert = <{tls.cert_file}
ssl_key = <{tls.key_file}

# Loopback only: plain LOGIN must work without TLS, as many test clients use it.
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
# Logs why a login failed (unknown user, password mismatch) for whoever debugs a test.
auth_verbose = yes
auth_failure_delay = 0
# The default set lacks "+", and plus-addressed mailboxes are common in helpdesks.
auth_username_chars = abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234567890.-_@+

default_internal_user = {identity.internal_user}
default_internal_group = {identity.internal_group}
default_login_user = {identity.login_user}
first_valid_uid = 0
first_valid_gid = 0
{chroot_setting}
mail_location = maildir:~/Maildir
# Durability is worthless for throwaway mail and fsync makes bulk APPENDs slow.
mail_fsync = never
# Every client is 127.0.0.1, and a test may hold many connections to one mailbox.
mail_max_userip_connections = 1000
namespace inbox {{
  inbox = yes
}}

{oauth2_passdb}passdb {{
  driver = passwd-file
  args = {passwd_dir}/%u
}}
userdb {{
  driver = passwd-file
  args = {passwd_dir}/%u
}}

service imap-login {{
{login_chroot}  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    address = {host}
    port = {ssl_port}
    ssl = yes
  }}
}}
# Its default user is root, which a non-root instance cannot switch to.
service auth-worker {{
  user = {identity.internal_user}
}}
# Mode 0 keeps Dovecot from creating the socket, which turns the auth penalty off.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


def _services_with_chroot(binary: Path, config: Path) -> list[str]:
    """Names of the services whose effective config sets a chroot."""
    output = _run([str(binary), "-c", str(config), "-a"], "read the generated Dovecot config")
    services: list[str] = []
    current: str | None = None
    depth = 0
    for line in output.splitlines():
        if current is None:
            match = re.match(r"service (\S+) \{$", line)
            if match:
                current, depth = match.group(1), 1
            continue
        depth += line.count("{") - line.count("}")
        if depth == 0:
            current = None
        elif depth == 1 and re.fullmatch(r"  chroot = \S.*", line):
            services.append(current)
    return services


_checked_versions: dict[Path, str] = {}


def _check_version(binary: Path) -> None:
    if binary in _checked_versions:
        return
    version = _run([str(binary), "--version"], "ask dovecot for its version").strip()
    if not version.startswith("2.3."):
        raise DovecotError(
            f"{binary} is Dovecot {version or '(unknown version)'}; the test server writes a "
            "Dovecot 2.3 configuration"
        )
    _checked_versions[binary] = version


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Stop a Dovecot master and every process in its group; bounded, never raises."""
    pgid = proc.pid
    try:
        if proc.poll() is None:
            # Every Dovecot process treats SIGTERM as a clean shutdown (it is what the master
            # sends them). Signalling the whole group at once takes milliseconds; signalling
            # only the master takes two seconds while it waits on its log process. The cost
            # is a few harmless "read(log listen_fd) failed: EOF" lines at the end of the log.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                proc.wait(timeout)
        # Children outlive the master briefly while they finish shutting down.
        deadline = time.monotonic() + timeout
        while _group_alive(pgid):
            if time.monotonic() >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                break
            time.sleep(0.02)
    except Exception:
        pass


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group ``pid`` leads, or just ``pid`` if it leads none."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
    except OSError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _expect_greeting(host: str, port: int, context: ssl.SSLContext | None) -> None:
    with socket.create_connection((host, port), timeout=2.0) as raw:
        sock: socket.socket = (
            context.wrap_socket(raw, server_hostname=host) if context is not None else raw
        )
        greeting = b""
        while not greeting.endswith(b"\r\n") and len(greeting) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            greeting += chunk
    if not greeting.startswith(b"* OK"):
        # Dovecot accepts connections before a login process is able to serve them.
        raise DovecotError(f"port {port} closed without an IMAP greeting ({greeting[:80]!r})")


def _free_port(host: str, avoid: int = 0) -> int:
    while True:
        family = _family(host)
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port != avoid:
            return port


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _is_ip_address(host: str) -> bool:
    try:
        socket.inet_pton(_family(host), host)
    except OSError:
        return False
    return True


def _certificate_hosts(host: str) -> tuple[str, ...]:
    hosts = ["localhost", "127.0.0.1", "::1"]
    if host not in hosts:
        hosts.append(host)
    return tuple(hosts)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _run(argv: Sequence[str], purpose: str) -> str:
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise DovecotError(
            f"could not {purpose}: {argv[0]} ran longer than {COMMAND_TIMEOUT:.0f}s"
        ) from None
    except OSError as exc:
        raise DovecotError(f"could not {purpose}: {exc}") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).decode("utf-8", "replace").strip()
        raise DovecotError(f"could not {purpose}: {' '.join(argv)} failed: {detail}")
    return result.stdout.decode("utf-8", "replace")
