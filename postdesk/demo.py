"""`make demo`: postdesk's main job on a throwaway local mail setup.

Starts a private Dovecot (IMAP on a loopback port) and an SMTP sink, delivers a handful
of realistic customer emails in English and Persian over IMAP APPEND, writes a config
file for them under ./demo-run/, and then runs the real command line: `postdesk init`,
`postdesk model train` on a CSV of the team's past tickets (written by the demo, in
English and Persian), `postdesk run --once`, `postdesk tickets list`, `postdesk tickets
show`, `postdesk inbound list --quarantined`, a short summary read from the database,
then an agent's replies from the command line, `postdesk kpi` (SLA in a Tehran business
calendar), and a QA round: `postdesk qa sample` for two reviewers, `qa import-reviews`,
`qa agreement` and `qa report`.
Everything is stopped and the servers' files are removed at the end; the database and
config stay in ./demo-run/ so you can keep exploring with `postdesk -c demo-run/postdesk.toml`.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from importlib import resources
from pathlib import Path

from postdesk.models import RawStatus
from postdesk.testing.dovecot import Dovecot, DovecotNotInstalled
from postdesk.testing.smtpsink import SmtpSink

SUPPORT = "support@demo.postdesk.test"
DOMAIN = "demo.postdesk.test"


def _message(
    *,
    sender: str,
    subject: str,
    body: str,
    when: datetime,
    charset: str = "utf-8",
    reply_to: EmailMessage | None = None,
    html: str | None = None,
    attachment: tuple[str, str, bytes] | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = f"Support <{SUPPORT}>"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1].rstrip(">"))
    if reply_to is not None:
        parent_id = reply_to["Message-ID"]
        msg["In-Reply-To"] = parent_id
        msg["References"] = " ".join(filter(None, [reply_to.get("References"), parent_id]))
    msg.set_content(body, charset=charset)
    if html is not None:
        msg.add_alternative(html, subtype="html", charset=charset)
    if attachment is not None:
        name, ctype, data = attachment
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


def _arabic_letters(text: str) -> str:
    return text.replace("\u06cc", "\u064a").replace("\u06a9", "\u0643")


def demo_mail(now: datetime) -> list[bytes]:
    """The customer mail the demo delivers, oldest first."""
    t = now - timedelta(hours=6)
    order = _message(
        sender="Alice Martin <alice@example.com>",
        subject="Order 10023 arrived damaged",
        body=(
            "Hello,\n\nmy order 10023 arrived today and the glass lid is cracked.\n"
            "Photo attached. Can you send a replacement?\n\nThanks,\nAlice\n"
        ),
        when=t,
        attachment=("lid.jpg", "image/jpeg", b"\xff\xd8\xff\xe0demo-jpeg-bytes\xff\xd9"),
    )
    order_reply = _message(
        sender="Alice Martin <alice@example.com>",
        subject="Re: Order 10023 arrived damaged",
        body=(
            "One more thing: the box was also missing the manual.\n\n"
            "> my order 10023 arrived today and the glass lid is cracked.\n"
        ),
        when=t + timedelta(minutes=40),
        reply_to=order,
    )
    invoice = _message(
        sender="Bob Chen <bob.chen@example.org>",
        subject="Invoice shows the wrong VAT number",
        body="Hi, our VAT number on invoice INV-2209 should be GB123456789. Bob",
        html=(
            "<html><body><p>Hi,</p><p>our VAT number on invoice <b>INV-2209</b> should be "
            "<code>GB123456789</code>.</p><p>Bob</p></body></html>"
        ),
        when=t + timedelta(minutes=55),
    )
    persian = _message(
        sender="مریم احمدی <maryam@example.ir>",
        subject="سفارش ۴۵۶۷ هنوز ارسال نشده",
        body=(
            "سلام،\n\nسفارش شماره ۴۵۶۷ را ده روز پیش ثبت کردم ولی هنوز ارسال نشده است.\n"
            "لطفاً فوری وضعیت آن را بررسی کنید.\n\nبا تشکر،\nمریم\n"
        ),
        when=t + timedelta(hours=1),
    )
    persian_1256 = _message(
        sender="رضا کریمی <reza@example.ir>",
        subject="مشکل در ورود به حساب کاربری",
        # Windows-1256 has no Persian yeh/kaf, so such mail carries the Arabic letters.
        body=_arabic_letters(
            "با سلام\nنمی‌توانم وارد حساب کاربری‌ام شوم. رمز عبور را هم عوض کردم.\nرضا\n"
        ),
        charset="windows-1256",
        when=t + timedelta(hours=2),
    )
    # A reply that lost its In-Reply-To (some webmail does that) but kept the ticket tag,
    # written with Persian digits: the ticket number for Maryam's mail in a fresh demo is 3.
    persian_tag = _message(
        sender="مریم احمدی <maryam@example.ir>",
        subject="پاسخ: سفارش ۴۵۶۷ [#۳]",
        body="کد رهگیری پستی هم برای من ارسال نشده است.\n",
        when=t + timedelta(hours=3),
    )
    # Nothing in it tells which team should answer: triage must not guess.
    vague = _message(
        sender="Dan Weber <dan@example.net>",
        subject="Quick note",
        body="Hi there, I have a quick note for you. Regards, Dan",
        when=t + timedelta(hours=4),
    )
    broken = (
        b"To: " + SUPPORT.encode() + b"\r\nSubject: no sender at all\r\n"
        b"Message-ID: <no-sender-1@demo.invalid>\r\n\r\nThis message has no From header.\r\n"
    )
    mails = [order, order_reply, invoice, persian, persian_1256, persian_tag, vague]
    return [bytes(m) for m in mails] + [broken]


# The team's past tickets, for the triage model: a help desk exports these from its old
# tool. Phrases per category, English and Persian, combined at random.
_HISTORY = {
    "delivery": (
        [
            "order",
            "parcel",
            "package",
            "delivery",
            "shipment",
            "tracking number",
            "courier",
            "arrived damaged",
            "not delivered",
            "late",
            "missing item",
            "broken in transit",
        ],
        [
            "سفارش",
            "بسته",
            "ارسال",
            "تحویل",
            "کد رهگیری",
            "پیک",
            "آسیب دیده",
            "نرسیده",
            "دیر رسید",
            "کالا کم است",
            "هنوز ارسال نشده",
            "پست",
        ],
    ),
    "billing": (
        [
            "invoice",
            "VAT number",
            "refund",
            "charged twice",
            "payment",
            "receipt",
            "credit card",
            "billing address",
            "price on the bill",
            "discount code",
            "bank transfer",
            "overcharged",
        ],
        [
            "فاکتور",
            "پرداخت",
            "بازگشت وجه",
            "دو بار کسر شد",
            "رسید",
            "کارت بانکی",
            "مبلغ",
            "مالیات",
            "تخفیف",
            "صورتحساب",
            "واریز",
            "هزینه اضافه",
        ],
    ),
    "account": (
        [
            "login",
            "password",
            "account locked",
            "sign in",
            "two-factor code",
            "username",
            "email address change",
            "reset link",
            "profile",
            "cannot log in",
            "verification",
            "delete my account",
        ],
        [
            "ورود",
            "رمز عبور",
            "حساب کاربری",
            "قفل شده",
            "نام کاربری",
            "کد تایید",
            "تغییر ایمیل",
            "بازیابی رمز",
            "پروفایل",
            "نمی‌توانم وارد شوم",
            "حذف حساب",
            "احراز هویت",
        ],
    ),
}
_HISTORY_FILLER = (
    ["hello", "please", "thanks", "regards", "help", "today", "soon", "again", "my", "the"],
    ["سلام", "لطفا", "ممنون", "با تشکر", "کمک", "امروز", "دوباره", "من", "شما", "خیلی"],
)


def write_history(path: Path, per_category: int = 70, seed: int = 7) -> Path:
    """A CSV (subject, body, category) of past tickets, half English and half Persian."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "body", "category"])
        for n in range(per_category):
            for category, languages in _HISTORY.items():
                language = n % 2
                words, filler = languages[language], _HISTORY_FILLER[language]
                subject = " ".join(rng.sample(words, 2))
                body = " ".join(rng.sample(words, 3) + rng.sample(filler, 4))
                writer.writerow([subject, body, category])
    return path


def _postdesk(config: Path, *args: str, echo: bool = True) -> str:
    command = [sys.executable, "-m", "postdesk", "-c", str(config), *args]
    if echo:
        print(f"$ postdesk {' '.join(args)}", flush=True)
    # Tables fit the terminal the demo runs in (its output is captured, so say how wide).
    env = {"COLUMNS": str(shutil.get_terminal_size().columns), **os.environ}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"demo: `postdesk {' '.join(args)}` failed (exit {done.returncode})")
    return done.stdout


def _write_config(
    path: Path, dovecot: Dovecot, user_email: str, password: str, smtp_port: int
) -> None:
    path.write_text(
        f"""# Written by `make demo`; the servers it names are gone once the demo ends.
data_dir = "data"

[database]
url = "sqlite:///postdesk.db"

[sla]
default_priority = "normal"
warn_before = "1h"
[sla.targets]
urgent = {{ first_response = "1h", resolution = "8h" }}
high = {{ first_response = "4h", resolution = "16h" }}
normal = {{ first_response = "8h", resolution = "40h" }}
low = {{ first_response = "16h", resolution = "80h" }}

[calendar.tehran]
timezone = "Asia/Tehran"
holiday_country = "IR"
[calendar.tehran.week]
sat = "08:00-16:00"
sun = "08:00-16:00"
mon = "08:00-16:00"
tue = "08:00-16:00"
wed = "08:00-16:00"
thu = "08:00-12:00"

[[mailbox]]
name = "support"
address = "{SUPPORT}"
calendar = "tehran"
host = "127.0.0.1"
port = {dovecot.port}
security = "none"
username = "{user_email}"
password_env = "POSTDESK_DEMO_PASSWORD"
folder = "INBOX"
processed_folder = "Processed"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"

[[agent]]
email = "sara@{DOMAIN}"
name = "Sara"

[triage]
target_precision = 0.9
[triage.keywords]
urgent = ["urgent", "asap", "فوری"]
""",
        encoding="utf-8",
    )
    os.environ["POSTDESK_DEMO_PASSWORD"] = password


def _kpis(config: Path) -> Counter[str]:
    tickets = json.loads(_postdesk(config, "tickets", "list", "--json", echo=False))
    raw = json.loads(_postdesk(config, "inbound", "list", "--json", echo=False))
    statuses = Counter(t["status"] for t in tickets)
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    outbox = json.loads(_postdesk(config, "outbox", "list", "--json", echo=False))
    ours = {row["message_id"] for row in outbox}
    # Customers' messages only: what postdesk sent is on the tickets too, so replies thread.
    messages = sum(1 for t in tickets for mid in t["message_ids"] if mid not in ours)
    persian = sum(1 for t in tickets if any("\u0600" <= ch <= "\u06ff" for ch in t["subject"]))
    categories = Counter(t["category"] for t in tickets if t["category"])
    by_category = ", ".join(f"{n} {c}" for c, n in sorted(categories.items()))
    unsure = sum(1 for t in tickets if t["needs_triage"])
    prioritized = sum(1 for t in tickets if t["priority"])
    quarantined = sum(1 for r in raw if r["status"] == RawStatus.QUARANTINED)
    print()
    print("KPI summary")
    print(f"  mail fetched over IMAP     {len(raw)}")
    print(f"  tickets                    {len(tickets)}  ({by_status})")
    print(f"  customer messages          {messages}  (replies threaded: {messages - len(tickets)})")
    print(f"  mail queued by postdesk    {len(outbox)}")
    print(f"  Persian-language tickets   {persian}")
    print(f"  categorized by the model   {sum(categories.values())}  ({by_category})")
    print(f"  needs triage (unsure)      {unsure}")
    print(f"  priority set by a rule     {prioritized}")
    print(f"  quarantined                {quarantined}")
    return Counter(row["kind"] for row in outbox)


def _agent_works(config: Path) -> None:
    """Sara answers from the command line: every open ticket gets a reply, half of them
    solving it (the customer is then asked for a score); the outbox sends it all."""
    print("\nThe agent's turn (from the command line; by email works the same)")
    tickets = json.loads(_postdesk(config, "tickets", "list", "--json", echo=False))
    waiting = sorted(t["number"] for t in tickets if t["status"] == "new")
    for i, number in enumerate(waiting):
        status = ["--status", "solved"] if i % 2 == 0 else []
        text = "Thanks for writing; this is sorted now. Best, Sara"
        print(_postdesk(config, "tickets", "reply", str(number), text, *status), end="")
    print(_postdesk(config, "run", "--once"), end="")
    print(_postdesk(config, "kpi"), end="")


def _quality(config: Path, workdir: Path) -> None:
    """A QA round: a sample of the solved tickets for two reviewers with full overlap,
    their reviews (made here, as if scored elsewhere) imported, their agreement and the
    quality report."""
    print("\nQuality assurance")
    sample = json.loads(
        _postdesk(
            config,
            "qa",
            "sample",
            "--n",
            "3",
            "--seed",
            "7",
            "--reviewer",
            "lead@" + DOMAIN,
            "--reviewer",
            "qa@" + DOMAIN,
            "--overlap",
            "1",
            "--json",
        )
    )
    tickets = sorted({row["ticket"] for row in sample["tickets"]})
    print(f"  sampled tickets {', '.join(f'#{n}' for n in tickets)} for two reviewers")
    scorecard = resources.files("postdesk.qa") / "scorecards" / "default.toml"
    reviews = workdir / "reviews.csv"
    rng = random.Random(7)
    with reviews.open("w", newline="", encoding="utf-8") as out:
        rows = csv.writer(out)
        rows.writerow(["ticket", "reviewer", "criterion", "rating"])
        for number in tickets:
            for criterion, scale in _criteria(Path(str(scorecard))):
                rating = scale[-1] if rng.random() < 0.7 else rng.choice(scale)
                for reviewer in ("lead", "qa"):
                    # The second reviewer mostly agrees with the first.
                    mine = rating if reviewer == "lead" or rng.random() < 0.8 else scale[0]
                    rows.writerow([number, f"{reviewer}@{DOMAIN}", criterion, mine])
    print(
        _postdesk(config, "qa", "import-reviews", str(reviews), "--scorecard", str(scorecard)),
        end="",
    )
    print(_postdesk(config, "qa", "agreement", "--bootstrap", "200"), end="")
    print(_postdesk(config, "qa", "report"), end="")


def _criteria(scorecard: Path) -> list[tuple[str, list[int]]]:
    """(key, possible ratings) of each criterion of a scorecard file."""
    data = tomllib.loads(scorecard.read_text(encoding="utf-8"))
    found = []
    for criterion in data["criterion"]:
        scale = str(criterion.get("scale", "1-5"))
        low, high = (0, 1) if scale == "pass-fail" else map(int, scale.split("-"))
        found.append((str(criterion["key"]), list(range(low, high + 1))))
    return found


def main() -> None:
    workdir = Path("demo-run").resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir()
    config = workdir / "postdesk.toml"
    try:
        dovecot = Dovecot(workdir / "dovecot")
        dovecot.start()
    except DovecotNotInstalled:
        raise SystemExit("demo: Dovecot is not installed; run scripts/ensure-dovecot") from None
    try:
        with SmtpSink() as sink:
            user = dovecot.add_user(SUPPORT)
            for raw in demo_mail(datetime.now(UTC)):
                dovecot.append(user, raw)
            print(
                f"Dovecot on 127.0.0.1:{dovecot.port} holds "
                f"{dovecot.message_count(user)} new messages for {SUPPORT}"
            )
            _write_config(config, dovecot, user.email, user.password, sink.port)
            print(_postdesk(config, "init"), end="")
            history = write_history(workdir / "history.csv")
            print(
                _postdesk(
                    config,
                    "model",
                    "train",
                    "--csv",
                    str(history),
                    "--text",
                    "subject,body",
                    "--label",
                    "category",
                ),
                end="",
            )
            print(_postdesk(config, "run", "--once"), end="")
            print(_postdesk(config, "tickets", "list"), end="")
            print(_postdesk(config, "tickets", "show", "1"), end="")
            print(_postdesk(config, "inbound", "list", "--quarantined"), end="")
            left = dovecot.message_count(user)
            moved = dovecot.message_count(user, "Processed")
            print(f"IMAP: {left} left in INBOX, {moved} moved to Processed after commit")
            kinds = _kpis(config)
            print(
                f"  SMTP sink received         {len(sink.messages)}"
                f" ({kinds.get('acknowledgement', 0)} acknowledgements to customers,"
                f" {kinds.get('notification', 0)} notifications to agents)"
            )
            _agent_works(config)
            _quality(config, workdir)
    finally:
        dovecot.stop()
        shutil.rmtree(workdir / "dovecot", ignore_errors=True)
    print(
        f"\nThe demo database stays in {workdir};\n"
        f"try: .venv/bin/postdesk -c {config} tickets show 3"
    )


if __name__ == "__main__":
    main()
