"""Development commands, registered into the product CLI through the ``nitro_llm.commands`` entry points."""
