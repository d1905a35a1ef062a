// Ask a delegated routing v1 server for providers with the real Helia client
// (@helia/delegated-routing-v1-http-api-client) and print what the client yields.
//
//   node providers.mjs <base-url> '<queries JSON>'
//
// <queries JSON> is a list of {"cid": "...", "filterAddrs": [...], "filterProtocols": [...]}
// (filters optional).  For each query, one line goes to stdout:
//   {"cid": "...", "records": [{"ID": "12D3...", "Addrs": ["/ip4/..."], "Protocols": [...], ...}]}
// with the client's PeerId and Multiaddr objects printed as strings and every other field kept.
// Exit status 1 when the client throws or logs an error (it logs and drops a record it cannot
// parse), so a record the client silently skipped fails the Python test.
import { delegatedRoutingV1HttpApiClient } from '@helia/delegated-routing-v1-http-api-client'
import { CID } from 'multiformats/cid'

const [base, queriesJson] = process.argv.slice(2)
if (base == null || queriesJson == null) {
  console.error('usage: node providers.mjs <base-url> <queries JSON>')
  process.exit(2)
}

const errors = []
const noop = () => {}
const logger = {
  forComponent (name) {
    const log = Object.assign(noop.bind(null), { enabled: false, trace: noop })
    log.error = (...args) => {
      errors.push(args)
      console.error(name, ...args)
    }
    return log
  }
}

const client = delegatedRoutingV1HttpApiClient({ url: base, cacheTTL: 0 })({ logger })
await client.start()
try {
  for (const query of JSON.parse(queriesJson)) {
    const options = {}
    if (query.filterAddrs != null) options.filterAddrs = query.filterAddrs
    if (query.filterProtocols != null) options.filterProtocols = query.filterProtocols
    const records = []
    for await (const record of client.getProviders(CID.parse(query.cid), options)) {
      records.push({
        ...record,
        ID: record.ID.toString(),
        Addrs: record.Addrs.map((addr) => addr.toString())
      })
    }
    console.log(JSON.stringify({ cid: query.cid, records }))
  }
} finally {
  await client.stop()
}
process.exit(errors.length === 0 ? 0 : 1)
