/**
 * The sampling rate, advertised the one way that nfdump (nfcapd), pmacct (nfacctd), goflow2 and
 * akvorado all read as the same rate (docs/collectors.md has who reads what): an Options Template
 * with the scope observationDomainId (149) and the one option samplingInterval (34) in exactly 4
 * bytes, and an options data record per observation domain, before the data it scales, in the
 * message of that data. Every collector keys the rate by exporter and domain, and nfcapd, nfacctd
 * and akvorado apply the last rate they read to the data after it, goflow2 the rate in the
 * message: with the record in front of the data of each rate, a domain whose records were
 * counted at several rates (a rate changed, or meter sets of different rates sharing the domain)
 * is read right by all four. The record goes also for a rate of 1: without it a collector knows
 * no rate (akvorado drops the flows, goflow2 reports 0, pmacct 0), which is not "every packet".
 */
import {IE} from '../wire/elements.js'
import type {Template} from '../wire/template.js'
import type {RecordRun} from './encode.js'

/** Bytes of the record: the domain and the interval, 4 bytes each. */
const SAMPLING_RECORD_LENGTH = 8
/** The largest interval samplingInterval carries (unsigned32). */
const MAX_INTERVAL = 0xffff_ffff

/**
 * The Options Template of the sampling rate. samplingInterval alone, without samplingAlgorithm
 * (35): nfcapd 1.7.1 reads no rate from a template that has both; goflow2 and pmacct misread
 * any length but 4.
 */
export function samplingTemplate(id: number): Template {
  return {
    id,
    scopeFieldCount: 1,
    fields: [
      {element: IE.observationDomainId, length: 4},
      {element: IE.samplingInterval, length: 4},
    ],
  }
}

/**
 * The rate a record carries for flows counted 1 packet in `interval`: 1 for an interval the meter
 * never gives (0, "not sampled"), since a rate of 0 makes nfdump complain and pmacct zero counts.
 */
export function advertisedInterval(interval: number): number {
  return Number.isInteger(interval) && interval >= 1 ? Math.min(interval, MAX_INTERVAL) : 1
}

/**
 * The one options data record saying that the data after it, in `domain`, counts 1 packet in
 * `interval`: kept in the message of the record after it (the data it scales).
 */
export function samplingRecordRun(template: Template, domain: number, interval: number): RecordRun {
  const rate = advertisedInterval(interval)
  return {
    count: 1,
    data: true,
    keepWithNext: true,
    setId: () => template.id,
    length: () => SAMPLING_RECORD_LENGTH,
    write(_i, _n, buf, pos) {
      buf.writeUInt32BE(domain >>> 0, pos)
      buf.writeUInt32BE(rate, pos + 4)
      return pos + SAMPLING_RECORD_LENGTH
    },
  }
}
