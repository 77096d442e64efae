"""Phrases of delivery reports that are not RFC 3464 DSNs: failure and delay subjects.

Regular expression fragments, matched case-insensitively anywhere in a subject (which
readers cut to a few hundred characters first). A subject alone never makes a bounce:
the reader also wants a machine sender.
"""

from __future__ import annotations

from typing import Final

# Subjects of a delivery failure: "Undeliverable: …", "Mail delivery failed", "配信不能".
FAILURE_SUBJECTS: Final[tuple[str, ...]] = (
    # English
    r"undeliver",
    r"non[- ]?deliver",
    r"delivery (?:status notification|notification|failure|failed|has failed|problem"
    r"|incomplete|delayed)",
    r"returned mail",
    r"mail delivery fail",
    r"failure notice",
    r"could not be delivered",
    r"not (?:been )?delivered",
    r"unable to deliver",
    r"mail system error",
    r"returned to sender",
    r"delayed mail",
    r"still being retried",
    r"warning: message .* delayed",
    # German
    r"unzustellbar",
    r"nicht zustellbar",
    # French
    r"non remis",
    r"non distribuable",
    # Spanish
    r"no se puede entregar",
    # Dutch
    r"onbestelbaar",
    # Italian
    r"impossibile recapitare",
    # Portuguese
    r"não entregue",
    # Swedish
    r"olevererbar",
    # Danish, Norwegian
    r"kan ikke leveres",
    # Polish
    r"nie można dostarczyć",
    # Russian
    r"недоставлен",
    r"не доставлен",
    # Arabic
    r"غير قابل للتسليم",
    # Persian
    r"قابل تحویل نیست",
    r"تحویل نشد",
    r"تحویل ناموفق",
    # Chinese (traditional, simplified), Japanese
    r"無法傳遞",
    r"无法投递",
    r"配信不能",
)

# Words that make a failure subject a delay warning: nobody is marked as bouncing for it.
DELAY_SUBJECTS: Final[tuple[str, ...]] = (
    # English
    r"delay",
    r"still being retried",
    r"warning: message",
    # German
    r"verzögert",
    # French
    r"retard",
    # Spanish
    r"retrasad",
    # Persian
    r"تأخیر",
)

# Where a bounce's own text ends and the returned message begins, at the start of a line
# (English: the servers that write these texts write them in English).
RETURNED_MESSAGE_MARKERS: Final[tuple[str, ...]] = (
    r"original message",
    r"this is a copy of the message",
    r"below this line is a copy",
    r"transcript of session follows",
    r"undelivered message",
    r"returned message",
    r"message headers follow",
)
