"""Paths of the conformance vectors, relative to ../shared/fixtures."""

NFT_AD = "go-libipni/baguqeeranpqrweyey2zsab2mmt33ixc3jkg27p5ri3abr5di2pbbsbaig74q"
NFT_HEAD = "go-libipni/nftstorage-signed-head.json"
DOC_AD = (
    "storetheindex-doc/"
    "ad-bafy2bzaceaceibjf5pottpm4ghfnu7jo7sjcqjom4vhzm5jmq7domxun5vor4.dagjson.json"
)
DOC_HEAD = "storetheindex-doc/signed-head.json"
PCACHE_INFO = "go-libipni/pcache-providers-response-ProviderInfo.json"
PCACHE_RESULTS = "go-libipni/pcache-chain-level-ep-expected-ProviderResults.json"
