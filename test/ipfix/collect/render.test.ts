/** Decoded records rendered for people and scripts: the JSON of `ipfix listen --json` and its lines of text. */
import assert from 'node:assert/strict'

import {IpfixDecoder, type DecodedMessage} from '../../../src/ipfix/collect/decoder.js'
import {formatRecordLine, renderRecordJson} from '../../../src/ipfix/collect/render.js'
import {REGISTRY_KNOWS_FORWARDING_STATUS} from '../flows.js'
import {hex, ID, message, optionsTemplateRecord, set, spec, templateRecord, u16, u32, u8} from '../messages.js'

const A = '198.18.0.1:50101'

/** Template 256: sourceIPv4Address/4, destinationIPv4Address/4, sourceTransportPort/2, octetDeltaCount/4 (reduced), packetDeltaCount/8. */
const TSET = set(
  2,
  templateRecord(
    256,
    spec(ID.sourceIPv4Address, 4),
    spec(ID.destinationIPv4Address, 4),
    spec(ID.sourceTransportPort, 2),
    spec(ID.octetDeltaCount, 4),
    spec(ID.packetDeltaCount, 8),
  ),
)

describe('ipfix/render (decoded records as JSON and as lines)', function () {
  function decoded(): DecodedMessage {
    const d = new IpfixDecoder()
    d.decode(message({odid: 9}, TSET, set(3, optionsTemplateRecord(300, 1, spec(ID.observationDomainId, 4), spec(ID.flowStartMicroseconds, 8)))), A)
    // 2^64 - 1 packets: beyond 2^53, so rendered as a decimal string.
    const big = Buffer.concat([u8(10, 0, 0, 1, 10, 0, 0, 2), u16(80), u32(7), hex('ff ff ff ff ff ff ff ff')])
    // 2023-11-14T22:13:20.5Z as an NTP timestamp: seconds + 2208988800, fraction 2^31.
    const micro = Buffer.concat([u32(9), u32(1_700_000_000 + 2_208_988_800, 0x80000000)])
    return d.decode(message({odid: 9, seq: 4, exportTime: 1_700_000_001}, set(256, big), set(300, micro)), A)
  }

  it('renderRecordJson: header fields, then the element names as keys, in template order', function () {
    const [data, options] = decoded().records
    const json = renderRecordJson(data)
    assert.deepEqual(Object.keys(json), [
      'exporter',
      'observationDomainId',
      'templateId',
      'sequenceNumber',
      'exportTime',
      'sourceIPv4Address',
      'destinationIPv4Address',
      'sourceTransportPort',
      'octetDeltaCount',
      'packetDeltaCount',
    ])
    assert.deepEqual(json, {
      exporter: A,
      observationDomainId: 9,
      templateId: 256,
      sequenceNumber: 4,
      exportTime: 1_700_000_001,
      sourceIPv4Address: '10.0.0.1',
      destinationIPv4Address: '10.0.0.2',
      sourceTransportPort: 80,
      octetDeltaCount: 7,
      packetDeltaCount: '18446744073709551615',
    })
    // JSON-safe: no bigint left.
    assert.doesNotThrow(() => JSON.stringify(json))
    assert.deepEqual(renderRecordJson(options), {
      exporter: A,
      observationDomainId: 9,
      templateId: 300,
      sequenceNumber: 4,
      exportTime: 1_700_000_001,
      options: true,
      flowStartMicroseconds: 1_700_000_000_500,
    })
  })

  it('formatRecordLine: one line with the header and name=value pairs', function () {
    const [data, options] = decoded().records
    assert.equal(
      formatRecordLine(data),
      `${A} od=9 tpl=256 seq=4 sourceIPv4Address=10.0.0.1 destinationIPv4Address=10.0.0.2 sourceTransportPort=80 octetDeltaCount=7 packetDeltaCount=18446744073709551615`,
    )
    assert.equal(formatRecordLine(options), `${A} od=9 tpl=300 seq=4 options observationDomainId=9 flowStartMicroseconds=1700000000500`)
  })

  it('the router fields: next hops as addresses (0.0.0.0 and :: when directly connected), interfaces, TTLs, inner tag, forwarding status', function () {
    const d = new IpfixDecoder()
    // ingressInterface 10, egressInterface 14, ipNextHopIPv4Address 15, ipNextHopIPv6Address 62,
    // minimumTTL 52, maximumTTL 53, dot1qCustomerVlanId 245, forwardingStatus 89 (one byte).
    const T = set(2, templateRecord(310, spec(10, 4), spec(14, 4), spec(15, 4), spec(62, 16), spec(52, 1), spec(53, 1), spec(245, 2), spec(89, 1)))
    const routed = Buffer.concat([u32(7, 9), u8(198, 19, 255, 1), hex('fe80 0000 0000 0000 0001 02ff fe03 0405'), u8(61, 64), u16(100), u8(64)])
    const local = Buffer.concat([u32(3, 0), u8(0, 0, 0, 0), Buffer.alloc(16), u8(64, 64), u16(0), u8(195)])
    const [a, b] = d.decode(message({odid: 1}, T, set(310, routed, local)), A).records
    // forwardingStatus by name once the registry knows IE 89; until then as ie89, its bytes in hex.
    const status = (v: number): Record<string, unknown> => (REGISTRY_KNOWS_FORWARDING_STATUS ? {forwardingStatus: v} : {ie89: v.toString(16)})
    const fields = (r: typeof a) => {
      const {
        exporter: _exporter,
        observationDomainId: _domain,
        templateId: _template,
        sequenceNumber: _sequence,
        exportTime: _time,
        ...rest
      } = renderRecordJson(r)
      return rest
    }
    assert.deepEqual(fields(a), {
      ingressInterface: 7,
      egressInterface: 9,
      ipNextHopIPv4Address: '198.19.255.1',
      ipNextHopIPv6Address: 'fe80::1:2ff:fe03:405',
      minimumTTL: 61,
      maximumTTL: 64,
      dot1qCustomerVlanId: 100,
      ...status(64),
    })
    assert.deepEqual(fields(b), {
      ingressInterface: 3,
      egressInterface: 0,
      ipNextHopIPv4Address: '0.0.0.0',
      ipNextHopIPv6Address: '::',
      minimumTTL: 64,
      maximumTTL: 64,
      dot1qCustomerVlanId: 0,
      ...status(195),
    })
    const statusText = REGISTRY_KNOWS_FORWARDING_STATUS ? 'forwardingStatus=195' : 'ie89=c3'
    assert.equal(
      formatRecordLine(b),
      `${A} od=1 tpl=310 seq=0 ingressInterface=3 egressInterface=0 ipNextHopIPv4Address=0.0.0.0 ipNextHopIPv6Address=:: minimumTTL=64 maximumTTL=64 dot1qCustomerVlanId=0 ${statusText}`,
    )
  })
})
