/**
 * The fields of a template in a config: an information element by name (one the registry has
 * and flowctl can fill, or, for flow files, any the registry has), at its natural length or a
 * length its type allows, with the closest names when it is misspelt.
 */
import {distance} from 'fastest-levenshtein'
import * as v from 'valibot'

import {allowedLengths, defaultLength, elementByName, similarNames, VARIABLE_LENGTH, type InformationElement} from '../ipfix/wire/elements.js'
import {EXPORTABLE_ELEMENTS, exportableElement, unfillableReason} from '../ipfix/export/exportable-elements.js'
import {describe, integer, isMap, join, list, map, text} from './schema-values.js'
import {problemText} from './source.js'

/**
 * What the parse in progress allows beyond the schema's defaults. valibot passes no context to a
 * transform, and parsing is synchronous, so allowingUnfillable sets it for the one parse it runs.
 */
const parsing = {allowUnfillable: false}

/** Runs `parse` with elements flowctl cannot fill allowed in templates, or not (a flow file fills them). */
export function allowingUnfillable<T>(allow: boolean, parse: () => T): T {
  parsing.allowUnfillable = allow
  try {
    return parse()
  } finally {
    parsing.allowUnfillable = false
  }
}

/**
 * The registry names closest to an unknown element name: those flowctl can export if any is close,
 * and of those only the closest (a typo of sourceIPv4Address suggests that, not sourceIPv6Address too).
 */
function elementSuggestions(name: string): string[] {
  const near = similarNames(name, 10).map((n) => ({name: n, d: distance(name.toLowerCase(), n.toLowerCase())}))
  const exportable = near.filter((n) => exportableElement(n.name))
  const pool = exportable.length > 0 ? exportable : near
  const best = Math.min(...pool.map((n) => n.d))
  return pool
    .filter((n) => n.d === best)
    .slice(0, 3)
    .map((n) => n.name)
}

/** An element a template may name: in the registry, and one flowctl has a value for. */
interface ExportElement {
  element: InformationElement
  /** The address family it ties a template to, if any. */
  family?: 4 | 6
  /** One of flowctl's own enterprise-specific elements (ENTERPRISE_ELEMENTS), not the registry's. */
  enterprise?: boolean
}

const EXPORTABLE_LIST = `an element flowctl can export: ${Object.keys(EXPORTABLE_ELEMENTS).join(', ')}`

const elementName = v.pipe(
  text('an information element name'),
  v.rawTransform(({dataset, addIssue, NEVER}): ExportElement => {
    const name = dataset.value.trim()
    const own = exportableElement(name)?.enterprise
    if (own) return {element: own, family: undefined, enterprise: true}
    const element = elementByName(name)
    if (!element) {
      const suggestions = elementSuggestions(name)
      addIssue({
        message:
          suggestions.length > 0
            ? `unknown information element '${name}'; did you mean ${join(suggestions)}?`
            : problemText(`unknown information element '${name}'`, EXPORTABLE_LIST),
      })
      return NEVER
    }
    const exportable = exportableElement(element.name)
    if (!exportable) {
      const reason = unfillableReason(element.name)
      if (reason && parsing.allowUnfillable) return {element, family: undefined}
      addIssue({
        message: problemText(`flowctl has no value for information element ${element.name} (${element.id})${reason ? `: ${reason}` : ''}`, EXPORTABLE_LIST),
      })
      return NEVER
    }
    return {element, family: exportable.family}
  }),
)

function lengthsText(element: InformationElement): string {
  const allowed = allowedLengths(element.type)
  if (allowed === 'any') return `1 to ${VARIABLE_LENGTH} (${VARIABLE_LENGTH} = variable length)`
  if (allowed.length === 1) return `${allowed[0]}`
  return `${join(allowed.map(String))} (reduced-size encoding, RFC 7011 §6.2)`
}

/** A template field as loaded: the element, and the length it is encoded in. */
export interface FieldValue extends ExportElement {
  length: number
  /** Whether it was written {name: ..., length: ...} (problems with the name then point at `name`). */
  named: boolean
}

const fieldMap = v.pipe(
  map(
    {name: elementName, length: v.nullish(integer(1, VARIABLE_LENGTH, `a field length from 1 to ${VARIABLE_LENGTH}`))},
    {name: 'an information element name'},
  ),
  v.rawTransform(({dataset, addIssue, NEVER}): FieldValue => {
    const {name, length} = dataset.value
    if (length === null || length === undefined) return {...name, length: defaultLength(name.element), named: true}
    const allowed = allowedLengths(name.element.type)
    if (allowed !== 'any' && !allowed.includes(length)) {
      const step = {type: 'object', origin: 'value', input: dataset.value, key: 'length', value: length} as const
      addIssue({message: problemText(`${length} is not a length for ${name.element.name} (${name.element.type})`, lengthsText(name.element)), path: [step]})
      return NEVER
    }
    return {...name, length, named: true}
  }),
)

const fieldName = v.pipe(
  elementName,
  v.transform((e): FieldValue => ({...e, length: defaultLength(e.element), named: false})),
)

const FIELD_FORM = 'an information element name, or {name: NAME, length: BYTES}'

const fieldOther = v.custom<never>(
  () => false,
  (issue) => problemText(`expected an element name, got ${describe(issue.input)}`, FIELD_FORM),
)

/** `sourceIPv4Address` or `{name: octetDeltaCount, length: 4}`. */
const field = v.lazy((input) => (isMap(input) ? fieldMap : Array.isArray(input) ? fieldOther : fieldName))

const FIELDS_ALLOWED = 'a list of information element names, or {name: NAME, length: BYTES}'
export const fieldList = list(field, FIELDS_ALLOWED, problemText('a template needs at least one field', FIELDS_ALLOWED))
