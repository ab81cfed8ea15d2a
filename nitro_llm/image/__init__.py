"""The enclave image: reproducible ramdisks and the EIF nitro-cli would build from them, with its PCRs."""
