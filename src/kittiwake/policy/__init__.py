"""Policy: typed async checks per SMTP stage, each returning a frozen ``Verdict``.

Owns the verdict vocabulary and the chain that runs checks in an explicit, printable order.
Security sensitive: this is where relaying is allowed or refused. The default chain refuses
every recipient it cannot place (never an open relay): a recipient needs some check to say
ACCEPT. A check that raises or times out becomes a TEMPFAIL, never a silent pass
(design practice 7).
"""

from kittiwake.policy.chain import PolicyChain, StageCheck
from kittiwake.policy.verdict import Action, Verdict

__all__ = ["Action", "PolicyChain", "StageCheck", "Verdict"]
