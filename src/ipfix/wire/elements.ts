/**
 * IPFIX Information Elements (RFC 7012): the IANA registry (generated into iana-elements.ts),
 * looked up by name without regard to case, so that the older tool's `SourceIPv4Address` and the
 * registry's `sourceIPv4Address` are the same element.
 */
import {distance} from 'fastest-levenshtein'

import type {AbstractType, InformationElement} from './element-types.js'
import {IANA_ELEMENTS} from './iana-elements.js'

export type {AbstractType, InformationElement} from './element-types.js'

/** The field length that announces variable-length encoding (RFC 7011 §7). */
export const VARIABLE_LENGTH = 65535

const NATURAL_LENGTH: Record<AbstractType, number> = {
  octetArray: VARIABLE_LENGTH,
  unsigned8: 1,
  unsigned16: 2,
  unsigned32: 4,
  unsigned64: 8,
  signed8: 1,
  signed16: 2,
  signed32: 4,
  signed64: 8,
  float32: 4,
  float64: 8,
  boolean: 1,
  macAddress: 6,
  string: VARIABLE_LENGTH,
  dateTimeSeconds: 4,
  dateTimeMilliseconds: 8,
  dateTimeMicroseconds: 8,
  dateTimeNanoseconds: 8,
  ipv4Address: 4,
  ipv6Address: 16,
  basicList: VARIABLE_LENGTH,
  subTemplateList: VARIABLE_LENGTH,
  subTemplateMultiList: VARIABLE_LENGTH,
}

export const ABSTRACT_TYPES = Object.keys(NATURAL_LENGTH) as AbstractType[]

export function naturalLength(type: AbstractType): number {
  return NATURAL_LENGTH[type]
}

/**
 * The length a template field of this element gets when none is given: its type's natural length,
 * unless the RFC defining the element asks for a reduced size (forwardingStatus: 1, RFC 7270).
 */
export function defaultLength(element: InformationElement): number {
  return element.defaultLength ?? NATURAL_LENGTH[element.type]
}

/**
 * The lengths a field of this type may be given in a template: its natural length, or a reduced
 * size (RFC 7011 §6.2: integers to fewer bytes, float64 to float32), or any fixed length or
 * variable length for octetArray and string.
 */
export function allowedLengths(type: AbstractType): number[] | 'any' {
  switch (type) {
    case 'unsigned64':
    case 'signed64':
      return [1, 2, 3, 4, 5, 6, 7, 8]
    case 'unsigned32':
    case 'signed32':
      return [1, 2, 3, 4]
    case 'unsigned16':
    case 'signed16':
      return [1, 2]
    case 'float64':
      return [4, 8]
    case 'octetArray':
    case 'string':
      return 'any'
    case 'unsigned8':
    case 'signed8':
    case 'float32':
    case 'boolean':
    case 'macAddress':
    case 'dateTimeSeconds':
    case 'dateTimeMilliseconds':
    case 'dateTimeMicroseconds':
    case 'dateTimeNanoseconds':
    case 'ipv4Address':
    case 'ipv6Address':
    case 'basicList':
    case 'subTemplateList':
    case 'subTemplateMultiList':
      return [NATURAL_LENGTH[type]]
  }
}

const byId = new Map<number, InformationElement>()
const byLowerName = new Map<string, InformationElement>()
for (const e of IANA_ELEMENTS) {
  if (!(e.type in NATURAL_LENGTH)) continue
  const element = e as InformationElement
  byId.set(element.id, element)
  byLowerName.set(element.name.toLowerCase(), element)
}

export function elementByName(name: string): InformationElement | undefined {
  return byLowerName.get(name.trim().toLowerCase())
}

function elementById(id: number): InformationElement | undefined {
  return byId.get(id)
}

/** Registry names closest to `name`, for "did you mean" in error messages. */
export function similarNames(name: string, max = 3): string[] {
  const lower = name.toLowerCase()
  const scored = [...byLowerName.values()].map((e) => ({name: e.name, d: distance(lower, e.name.toLowerCase())}))
  scored.sort((a, b) => a.d - b.d)
  return scored
    .filter((s) => s.d <= Math.max(2, Math.floor(lower.length / 4)))
    .slice(0, max)
    .map((s) => s.name)
}

// IEs flowctl uses by number, resolved through the registry so no ID is typed twice.
function must(name: string): InformationElement {
  const e = elementByName(name)
  if (!e) throw new Error(`IANA registry lacks ${name}`)
  return e
}

export const IE = {
  octetDeltaCount: must('octetDeltaCount'),
  packetDeltaCount: must('packetDeltaCount'),
  exportedOctetTotalCount: must('exportedOctetTotalCount'),
  exportedMessageTotalCount: must('exportedMessageTotalCount'),
  exportedFlowRecordTotalCount: must('exportedFlowRecordTotalCount'),
  ignoredPacketTotalCount: must('ignoredPacketTotalCount'),
  ignoredOctetTotalCount: must('ignoredOctetTotalCount'),
  notSentFlowTotalCount: must('notSentFlowTotalCount'),
  observationDomainId: must('observationDomainId'),
  observationTimeMilliseconds: must('observationTimeMilliseconds'),
  flowEndReason: must('flowEndReason'),
  samplingInterval: must('samplingInterval'),
  ingressInterface: must('ingressInterface'),
  interfaceName: must('interfaceName'),
  interfaceDescription: must('interfaceDescription'),
} as const

/**
 * Synthetic elements shared by every template that names them. The cache is process-wide, so it
 * is bounded: a sender can name 2^47 enterprise elements, and before this bound each one it named
 * stayed in memory for good, whatever the decoder forgot. Past the bound a synthetic element is
 * made afresh for the template that names it and goes when that template goes (the decoder counts
 * its memory with the template's, see templateMemory()).
 */
const synthetic = new Map<string, InformationElement>()
const SYNTHETIC_ELEMENT_CACHE_SIZE = 4096

/**
 * Whether `element` is shared, the registry's or a cached synthetic one, rather than made for the
 * one template field that holds it (which then holds its memory too).
 */
export function isSharedElement(element: InformationElement): boolean {
  return byId.get(element.id) === element || synthetic.get(element.name) === element || reverseById.get(element.id) === element
}

/** The reverse Private Enterprise Number of RFC 5103 (biflows): its element N is IANA element N's reverse. */
const REVERSE_PEN = 29305
/** Reverse elements by id, made once each (at most one per registry element). */
const reverseById = new Map<number, InformationElement>()

/**
 * The reverse of IANA element `id` (RFC 5103 §6.1): the same type, named `reverse` and its
 * name capitalised (reversePacketDeltaCount); undefined for an id the registry lacks.
 */
function reverseElement(id: number): InformationElement | undefined {
  let e = reverseById.get(id)
  if (e) return e
  const forward = elementById(id)
  if (!forward) return undefined
  e = {...forward, name: `reverse${forward.name[0].toUpperCase()}${forward.name.slice(1)}`}
  reverseById.set(id, e)
  return e
}

/**
 * The element a field specifier names: the IANA registry's for enterprise bit 0, its reverse for
 * the reverse PEN 29305 (RFC 5103), otherwise (or for an id the registry lacks) a synthetic
 * octetArray element named `ie<ID>` or `e<PEN>.ie<ID>`.
 */
export function resolveElement(id: number, enterpriseNumber?: number): InformationElement {
  if (enterpriseNumber === undefined) {
    const known = elementById(id)
    if (known) return known
  }
  if (enterpriseNumber === REVERSE_PEN) {
    const reverse = reverseElement(id)
    if (reverse) return reverse
  }
  const name = enterpriseNumber === undefined ? `ie${id}` : `e${enterpriseNumber}.ie${id}`
  let e = synthetic.get(name)
  if (!e) {
    e = {id, name, type: 'octetArray'}
    if (synthetic.size < SYNTHETIC_ELEMENT_CACHE_SIZE) synthetic.set(name, e)
  }
  return e
}

export function isVariableType(type: AbstractType): boolean {
  return type === 'octetArray' || type === 'string' || isListType(type)
}

export function isListType(type: AbstractType): boolean {
  return type === 'basicList' || type === 'subTemplateList' || type === 'subTemplateMultiList'
}

/** Whether a template may give a field of this type this length (RFC 7011 §6.2, §7; RFC 6313 §4.5). */
export function isValidLength(type: AbstractType, length: number): boolean {
  if (!Number.isInteger(length) || length < 0 || length > VARIABLE_LENGTH) return false
  if (length === VARIABLE_LENGTH) return isVariableType(type)
  if (isListType(type)) return true // a list of constant encoded size may be given a fixed length
  const allowed = allowedLengths(type)
  return allowed === 'any' || allowed.includes(length)
}

/** Why a template may not give a field of this type this length, for error messages. */
export function lengthProblem(type: AbstractType, length: number): string {
  if (length === VARIABLE_LENGTH) return `variable length (65535) is not valid for ${type}`
  const allowed = allowedLengths(type)
  const which = allowed === 'any' ? 'any length' : allowed.length === 1 ? `${allowed[0]}` : `${allowed[0]} to ${allowed[allowed.length - 1]}`
  return `field length ${length} is not valid for ${type} (allowed: ${which})`
}
