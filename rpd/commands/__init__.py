"""Click commands of `rpd`, one module per stage; `rpd.cli` assembles them."""
