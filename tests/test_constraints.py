"""The constraint language against anax's own test vectors (open-horizon/anax at 2f3fa5a).

Each vector names the Go test it comes from. anax's "fails" in the IsSatisfiedBy tests are either "not satisfied"
or a parse error; which one is stated per vector (a parse error is a ConstraintError here).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgebot.constraints import (
    ConstraintError,
    Constraints,
    _is_version_range,
    _version_range,
    compatible,
    compile_constraints,
    satisfies,
)


def props(text: str) -> list[dict[str, Any]]:
    return json.loads(text)


# -- externalpolicy/text_language/text_language_test.go: what the language accepts ------------------------------------
VALID = [
    # Test_Validate_Succeed1
    ["iame2edev == true && cpu == 3 || memory <= 32", 'iame2edev == "true"', 'hello == "world"',
     "hello in \"'hi world', 'test'\"", 'eggs == "truck load" AND certification in "USDA, Organic"',
     "version == 1.1.1 OR USDA == true", "version in [1.1.1,INFINITY) OR cert == USDA"],
    # Test_Validate_Succeed_Special_Characters
    ["でんしゃのりば == アイウエオカキクケコサシスセソ", "火车站 == 上海", "車號 == 漢54321",
     "estación_de_tren = Nochistlán", "기차역== 서울시",
     "アイウエオカキクケコサシスセソ==最終ログインを有効にする"
     "ＡＢＣ一丁七Çàâｱｲｳ€¥鯵表噂ソ十豹竹敷～兎椄＊＠＇屜丯愛金",
     'All=="möglich política règles d\'arrêt Não é possível ler o arquivo を使用したポリシーのアドバタイズを開始しま '
     '서비스에 대한 정책 파을 읽을 수 없습니다. 오 副本同步本地节点策略 無法從本端資料庫讀取節點物件"'],
    ["version==1.1.1 AND USDA == true"],  # Test_Validate_Succeed2
    ["version == 1.1.1 OR USDA == true", "version==1.1.1 AND USDA == true"],  # Test_Validate_Succeed3
    ["version>1 OR version<1 OR version>=0 AND version<=0 OR USDA==true OR USDA=false",
     "version=1.1.1 AND xyz!=abc"],  # Test_Validate_Succeed4
    ["version> 1 OR version <1 OR version >=0 AND version<= 0 OR USDA ==true OR USDA= false",
     "version =1.1.1 AND xyz !=123"],  # Test_Validate_Succeed5
    ["(version> 1 OR version <1 OR version >=0) AND (version<= 0 OR (USDA ==true OR USDA= false))",
     "version =1.1.1 AND xyz !=123"],  # Test_Validate_Succeed6
    ["version> 1 OR version <1 OR version >=0 AND version<= 0",
     "num => 5 OR num =< 22 OR num==10.32 OR num =6"],  # Test_Validate_Succeed7
    ["(version> 1 OR version <1 OR version >=0) AND  ( version<= 0 OR (  USDA ==true OR USDA= false  ) )",
     " (version =1.1.1 AND xyz !=123) "],  # Test_Validate_Succeed8
    # Test_GetNextExpression_Succeed
    ['version == 1.1.1 OR USDA == true AND book == "one fish two fish" && author == "Suess"'],
    ['iame2edev == true && iame2edev == "true" && cpu == 3 || memory <= 32 AND hello == "world" && hello in '
     '"\'hi world\', \'test\'" AND eggs == "truck load" AND certification in "USDA, Organic" AND version == 1.1.1 OR '
     "USDA == true AND version in [1.1.1,INFINITY) OR cert == USDA"],
    ['iame2edev==true && cpu==3 AND hello=="world" && hello in "\'hi world\', \'test\'"'],
    ['cpu < 4 && intValue >= 3 || inininintValue == "ininint" && inVersion in [0.0.0,1.4.3]'],
    # externalpolicy/constraint_expression_test.go Test_simple_conversion
    ["prop == value"], ["prop == value && prop2 == value2"], ["prop == value && prop2 == value2 || prop3 == value3"],
    ["prop == value && prop2 == value2 || prop3 == value3 || prop4 == value4"],
    ["prop == value && prop2 == value2 || prop3 == value3 || prop4 == value4 && prop5 == value5"],
]


@pytest.mark.parametrize("constraints", VALID)
def test_anax_accepts(constraints: list[str]) -> None:
    compile_constraints(constraints)


# (constraint list, anax's inner error message): text_language_test.go Test_Validate_Failed1..5
INVALID = [
    (['eggs == "truck load" || certification == "USDA, Organic"'],
     "Property type list of strings can only use operator 'in'."),
    (["hello == \"'hi world', 'test'\""], "Property type list of strings can only use operator 'in'."),
    (["iame2edev < true && cpu == 3 || memory <= 32", "hello > world"],
     "Cannot use numerical comparison operator  <  with value true."),
    (["eggs == truck load && certification == USDA"],
     "No control operator found. Expecting one of AND,&&,OR,||. Found:  load && certification == USDA"),
    (["version == 1.1.1 abcdefg USDA == true"],
     "No control operator found. Expecting one of AND,&&,OR,||. Found:  abcdefg USDA == true"),
    (["(version == 1.1.1 && USDA == true"], "The constraint expression contains unmatched parentheses."),
]


@pytest.mark.parametrize(("constraints", "reason"), INVALID)
def test_anax_refuses(constraints: list[str], reason: str) -> None:
    with pytest.raises(ConstraintError) as raised:
        compile_constraints(constraints)
    assert raised.value.reason == reason
    assert raised.value.expression == constraints[0]


# -- externalpolicy/constraint_expression_test.go Test_succeed_IsSatisfiedBy -----------------------------------------
FACTORY_PROPS = [{"name": "prop", "value": True}, {"name": "prop2", "value": "a b"},
                 {"name": "prop3", "value": "value3"}, {"name": "prop4", "value": "value4"},
                 {"name": "prop5", "value": "value5"}]
SATISFIED = [
    (["prop == true && prop2 == \"a b\""], FACTORY_PROPS),
    (["prop == onefishtwofish && prop2 == value2"],
     props('[{"name":"prop","value":"onefishtwofish"},{"name":"prop2","value":"value2"},'
           '{"name":"prop3","value":"value3"}]')),
    (["prop == value && prop2 == value2", "prop3 == value3 || prop4 == value4 && prop5 <= 5", "property6 >= 6"],
     props('[{"name":"prop","value":"value"},{"name":"prop2","value":"value2"},{"name":"prop3","value":"value3"},'
           '{"name":"prop4","value":"value4"},{"name":"prop5","value":5},{"name":"property6","value":7.0}]')),
    (["iame2edev == true && cpu == 3 || memory <= 32", 'hello == "world"',
      'eggs == "truckload" AND certification in "USDA,Organic"', "version == 1.1.1 OR USDA == true",
      "version in [1.1.1,INFINITY) OR cert == USDA"],
     props('[{"name":"iame2edev", "value":true},{"name":"cpu", "value":3},{"name":"memory", "value":32},'
           '{"name":"hello", "value":"world"},{"name":"eggs","value":"truckload"},{"name":"USDA","value":true},'
           '{"name":"certification","value":"USDA"},{"name":"version","value":"1.2.1","type":"version"}]')),
    (['version == 1.1.1 OR USDA in "United,States,Department,of,Agriculture"',
      "version in [1.1.1,INFINITY) OR cert == USDA", 'color == "orange"'],
     props('[{"name":"version", "value":"2.1.5", "type":"version"},{"name":"USDA", "value":"Department"},'
           '{"name":"color", "value":"orange","type":"string"}]')),
    (["purpose==network-testing"],
     props('[{"name":"purpose", "value":"network-testing"},{"name":"group", "value":"bluenode"},'
           '{"name":"openhorizon.cpu", "value":"1"},{"name":"openhorizon.arch", "value":"amd64"},'
           '{"name":"openhorizon.memory", "value":"3918"}]')),
    (["iame2edev == true", "NONS==false || NOGPS == true || NOLOC == false || NOPWS == false || NOHELLO == false"],
     props('[{"name":"iame2edev", "value":"true"},{"name":"NONS", "value":"false"},{"name":"number", "value":"12"},'
           '{"name":"foo", "value":"bar"}]')),
    (['color == gray || (colour ="grey" && countryin"england,australia,canada")'],
     props('[{"name":"color", "value":"gray"}]')),
    (['(species == t-rex && ((feathers =hopefully && scales=maybe || (talonsin"sharp,very sharp" || teeth =1.3.8))))'],
     props('[{"name":"species", "value":"t-rex"},{"name":"feathers", "value": "hopefully"},'
           '{"name":"talons", "value": "sharp    "}]')),
    (["species == cat"], props('[{"name":"species", "value":"toad,cat,dog"}]')),
    (["version in [0.0.1,9.3.2)"], props('[{"name":"version", "value":"0.0.2"}]')),
    (["inVersion in [0.0.1,9.3.2) && intValue > 4"],
     props('[{"name":"inVersion", "value":"0.0.2"},{"name":"intValue","value":5}]')),
    (['ininString in "cat, dog, mouse" || intValue > 4'],
     props('[{"name":"ininString", "value":"dog"},{"name":"intValue","value":2}]')),
]


@pytest.mark.parametrize(("constraints", "properties"), SATISFIED)
def test_anax_satisfied(constraints: list[str], properties: list[dict[str, Any]]) -> None:
    assert compile_constraints(constraints)(properties)


# -- constraint_expression_test.go Test_fail_IsSatisfiedBy (parse-valid vectors: anax says "not satisfied") ---------
NOT_SATISFIED = [
    (["((versionin[1.3.1,3.1.2) && server=false) || (os!=windows && foo !=bar) )"],
     props('[{"name":"version", "value":"2.3.4"},{"name":"foo", "value": "chunk"}]')),
    ([' (sasquatch=real && locationin"British Columbia,Alberta,Montana") OR '
      '(nessie  ==   real && location="Scotland")'],
     props('[{"name":"sasquatch", "value":"real"},{"name":"location", "value": "Scotland"}]')),
    ([" purpose == testing AND ( nodenum > 4 || nodenum <= 2)"],
     props('[{"name":"purpose", "value":"testing"},{"name":"nodenum", "value": "3"}]')),
    ([' purpose == testing AND ( nodenum > 4 || nodenum <= 2 || (test2 in "a,b,c" && openhorizon.cpu ==2) || '
      "propx = false)"],
     props('[{"name":"purpose", "value":"testing"},{"name":"nodenum", "value": "3"},{"name":"test2", "value": "b"}]')),
    (['( purpose == testing) AND ( nodenum > 4 || nodenum <= 2 || (test2 in "a,b,c" && openhorizon.cpu ==2) || '
      "propx = false)"],
     props('[{"name":"openhorizon.cpu", "value":"2"},{"name":"nodenum", "value": "3"},'
           '{"name":"test2", "value": "b"}]')),
    (["device=kiosk && (station=kyoto OR station=hunai)"],
     props('[{"name":"device", "value":"kiosk"},{"name":"station", "value": "tokyo"}]')),
    (['device=kiosk && (station=kyoto OR station=hunai) && stationtype="train"'],
     props('[{"name":"device", "value":"kiosk"},{"name":"station", "value": "kyoto"}]')),
    (['device=kiosk && station=kyoto  && stationtype="train" AND schedule=on-time'],
     props('[{"name":"device", "value":"kiosk"},{"name":"schedule", "value": "on-time"}]')),
    (['device=kiosk || station=kyoto  || stationtype="train" OR schedule=on-time'],
     props('[{"name":"device", "value":"scanner"},{"name":"schedule", "value": "delayed"}]')),
    (["((device=kiosk || station=macau) && (station=kyoto OR station=hunai))"],
     props('[{"name":"device", "value":"kiosk"},{"name":"station", "value": "tokyo"}]')),
    (["purpose == network-testing1", "group == bluenode"],
     props('[{"name":"purpose", "value":"network-testing"},{"name":"group", "value": "bluenode"}]')),
]


@pytest.mark.parametrize(("constraints", "properties"), NOT_SATISFIED)
def test_anax_not_satisfied(constraints: list[str], properties: list[dict[str, Any]]) -> None:
    assert not compile_constraints(constraints)(properties)


def test_anax_fail_vector_that_is_a_parse_error() -> None:
    """Test_fail_IsSatisfiedBy's first vector: anax fails it in GetNextExpression (== with a list value)."""
    with pytest.raises(ConstraintError, match="list of strings can only use operator 'in'"):
        compile_constraints(['prop == true && prop2 == "value2, value3, value4"'])


# -- externalpolicy/counter_party_properties_test.go, the clause vectors written in the text language ---------------
CLAUSES = [
    # Test_satisfy_simple1 / Test_satisfy_simple2 / Test_satisfy_multiple1
    ("prop1 == true", '[{"name":"prop1", "value":true}]', True),
    ("prop1 == val1", '[{"name":"prop1", "value":"val1"}]', True),
    ("prop1 != val2", '[{"name":"prop1", "value":"val1"}]', True),
    ("prop1 > 9", '[{"name":"prop1", "value":10}]', True),
    ("prop1 < 11", '[{"name":"prop1", "value":10}]', True),
    ("prop1 <= 11", '[{"name":"prop1", "value":10}]', True),
    ("prop1 <= 10", '[{"name":"prop1", "value":10}]', True),
    ("prop1 >= 10", '[{"name":"prop1", "value":10}]', True),
    ("prop1 >= 9", '[{"name":"prop1", "value":10}]', True),
    ("prop1 == 10", '[{"name":"prop1", "value":10}]', True),
    ("prop1 != 5", '[{"name":"prop1", "value":10}]', True),
    ("prop1 == val1 && prop2 == val2", '[{"name":"prop1","value":"val1"},{"name":"prop2","value":"val2"}]', True),
    ("prop1 == val1 || prop2 == val2", '[{"name":"prop2", "value":"val2"}]', True),
    # Test_not_satisfy_simple1 / Test_not_satisfy_simple2 / Test_not_satisfy_multiple1
    ("prop1 == false", '[{"name":"prop1", "value":true}]', False),
    ('prop1 in "2,z,arch"', '[{"name":"prop1", "value":"a, b, c", "type":"list of strings"}]', False),
    ("prop1 == val1", '[{"name":"prop2", "value":"val1"}]', False),
    ("prop1 == val1 && prop2 == val2", '[{"name":"prop1", "value":"val1"}]', False),
    ("prop1 == val1 || prop2 == val2", '[{"name":"prop1", "value":"val3"}]', False),
    ("prop1 != val1", '[{"name":"prop1", "value":"val1"}]', False),
    ("prop1 = val1", '[{"name":"prop1", "value":"val2"}]', False),
    ("prop1 > 10", '[{"name":"prop1", "value":10}]', False),
    ("prop1 < 10", '[{"name":"prop1", "value":10}]', False),
    ("prop1 >= 11", '[{"name":"prop1", "value":10}]', False),
    ("prop1 <= 9", '[{"name":"prop1", "value":10}]', False),
    ("prop1 = 9", '[{"name":"prop1", "value":10}]', False),
    ("prop1 != 10", '[{"name":"prop1", "value":10}]', False),
    ("prop1 == val1 && prop2 == val2", '[{"name":"prop1","value":"val1"},{"name":"prop2","value":"val1"}]', False),
]


@pytest.mark.parametrize(("constraint", "properties", "expected"), CLAUSES)
def test_anax_clauses(constraint: str, properties: str, expected: bool) -> None:
    assert compile_constraints([constraint])(props(properties)) is expected


# -- semanticversion/version_test.go -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("version", "inside"), [  # TestRanges1: [1,2]
    ("1", True), ("2", True), ("1.0", True), ("2.0", True), ("1.0.0", True), ("2.0.0", True), ("1.a", False),
    ("2.a", False), ("1.1", True), ("1.9", True), ("1.0.1", True), ("1.1.1", True), ("1.1.01", True),
    ("1.09.0", True), ("2.1", False), ("2.01", False), ("", False)])
def test_version_range_inclusive(version: str, inside: bool) -> None:
    found = _version_range("[1,2]")
    assert not isinstance(found, str) and found.contains(version) is inside


@pytest.mark.parametrize(("version", "inside"), [("1", True), ("2", False), ("1.9.9", True), ("0.9", False)])
def test_version_range_half_open(version: str, inside: bool) -> None:  # TestRanges2: [1,2)
    found = _version_range("[1,2)")
    assert not isinstance(found, str) and found.contains(version) is inside


@pytest.mark.parametrize(("text", "valid"), [  # TestVersionExpressionSuccess / TestVersionExpressionFailure
    ("[1.2.3,INFINITY)", True), ("[1.2.3,4.5.6)", True), ("[1.2.3,4.5.6]", True), ("(1.2.3,INFINITY)", True),
    ("(1.2.3,4.5.6]", True), ("(1.2.0-a,1.2.0-z]", True), ("(1.2-test,1.2-release]", True), ("(1.0,1.2-beta]", True),
    ("1", False), ("1.2", False), ("1.2.3", False), ("[1.2)", False), ("1,1", False), ("(1", False), ("(1,", False),
    ("a", False), ("[a,2]", False), ("(a,b)", False), ("(1.2.3,a]", False), ("(1.1.1,1.2a]", False),
    ("(1-b,a-b]", False)])
def test_version_expression(text: str, valid: bool) -> None:
    assert _is_version_range(text) is valid


# -- types and quirks read from propertyInArray / the lexer (not vectors of anax's tests) -----------------------------
@pytest.mark.parametrize(("constraint", "properties", "expected"), [
    # version ranges on a version-typed property; a bare version as range means [v,INFINITY)
    ("version in [1.0.0,2.0.0)", '[{"name":"version","value":"1.5.0","type":"version"}]', True),
    ("version in [1.0.0,2.0.0)", '[{"name":"version","value":"2.0.0","type":"version"}]', False),
    ("version in (1.0.0,2.0.0]", '[{"name":"version","value":"2.0.0","type":"version"}]', True),
    ("version in 1.0.0", '[{"name":"version","value":"3.0.0","type":"version"}]', True),
    ("version in 1.0.0", '[{"name":"version","value":"3.0.0"}]', False),  # untyped: compared as strings
    ("version in [1.0.0,2.0.0)", '[{"name":"version","value":"1.0.0-rc.1","type":"version"}]', False),
    # a number is never equal to a quoted value; a string is never ordered
    ('cpu == "3"', '[{"name":"cpu","value":3}]', False),
    ("cpu == 3", '[{"name":"cpu","value":"3"}]', True),
    ("cpu > 2", '[{"name":"cpu","value":"3"}]', False),
    ("cpu > 2", '[{"name":"cpu","value":3}]', True),
    ("memory >= 1024.5", '[{"name":"memory","value":2048}]', True),
    ("num => 5", '[{"name":"num","value":5}]', True),  # "=>" compares as == on numbers
    ("num => 5", '[{"name":"num","value":"5"}]', False),  # ... and never holds on strings
    # booleans: Go's ParseBool spellings, only == and !=
    ("ok == 1", '[{"name":"ok","value":true}]', True),
    ("ok != True", '[{"name":"ok","value":false}]', True),
    ('ok == "true"', '[{"name":"ok","value":true}]', False),
    ('ok in "true"', '[{"name":"ok","value":true}]', False),
    # lists
    ('zone in "eu, us"', '[{"name":"zone","value":"us"}]', True),
    ('zone in "eu, us"', '[{"name":"zone","value":"asia"}]', False),
    ('zones in "eu,us"', '[{"name":"zones","value":"asia,us","type":"list of strings"}]', True),
    ("zones != us", '[{"name":"zones","value":"asia,us","type":"list of strings"}]', False),
    ("zones != us", '[{"name":"zones","value":"asia,us"}]', True),
    # missing property: false, also for !=
    ("os != windows", '[{"name":"foo","value":"bar"}]', False),
    # lexer quirks: "xyz!=abc" is the property "xyz!" equal to "abc"; a leading space joins the name
    ("xyz!=abc", '[{"name":"xyz","value":"def"}]', False),
    ("xyz!=abc", '[{"name":"xyz!","value":"abc"}]', True),
    (" purpose == testing", '[{"name":"purpose","value":"testing"}]', False),
    ("(purpose == testing)", '[{"name":"purpose","value":"testing"}]', True),
    # precedence: AND binds tighter than OR; parentheses override
    ("a == 1 || b == 1 && c == 1", '[{"name":"a","value":1}]', True),
    ("(a == 1 || b == 1) && c == 1", '[{"name":"a","value":1}]', False),
    ("", "[]", True),
])
def test_types_and_quirks(constraint: str, properties: str, expected: bool) -> None:
    assert compile_constraints([constraint])(props(properties)) is expected


def test_empty_list_holds_and_duplicate_names_first_decides() -> None:
    assert compile_constraints([])([])
    # the first property of that name that can decide the clause decides it: a boolean passes an "in" whose value
    # reads as a boolean on to the next property ("xxin 1" is "xx in 1", which only that spelling lets through)
    two: list[dict[str, Any]] = [{"name": "xx", "value": True}, {"name": "xx", "value": "1"}]
    assert compile_constraints(["xxin 1"])(two)
    assert not compile_constraints(['xx in "1"'])(two)  # "\"1\"" is no boolean: the boolean decides, false
    assert not compile_constraints(["xx == a"])(two)


# -- errors ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("constraint", "position", "reason"), [
    ("group == canary AND NOT tier == 1", 23, 'Non-operator token proceeding property name token. "NOT tier"'),
    ("NOT (group == canary)", 3, 'Non-operator token proceeding property name token. "NOT ("'),
    ("a==b&&c==d", 4, "no match found for &"),
    ("zone in eu,us", 8, "The 'in' operator can only be used for types version and list of strings"),
    ("version in [1.0.0, 2.0.0)", 11, "Version_Expression: Whitespace is not permitted in [1.0.0, 2.0.0)."),
    ("version == [1.0.0,2.0.0)", 11, "Version range can only use operator 'in'."),
    ("tier > high", 7, "Cannot use numerical comparison operator  >  with value high."),
    ("a == b OR", 6, "No control operator found. Expecting one of AND,&&,OR,||. Found:  OR"),
    ("a == b)", 7, "The constraint expression contains unmatched parentheses."),
    ("(a == b) (c == d)", 10, "No control operator found. Expecting one of AND,&&,OR,||. Found: c == d)"),
    ("a == ", 5, "Invalid property value. a == "),
    ("== b", 0, "Next expression not found: == b"),
])
def test_errors_name_expression_position_and_reason(constraint: str, position: int, reason: str) -> None:
    with pytest.raises(ConstraintError) as raised:
        compile_constraints(["group == canary", constraint])
    error = raised.value
    assert (error.expression, error.position, error.reason) == (constraint, position, reason)
    assert repr(constraint) in str(error) and f"position {position}" in str(error)


def test_not_is_named_in_the_message() -> None:
    with pytest.raises(ConstraintError, match="has no NOT"):
        compile_constraints(["group == canary && NOT tier == 1"])


def test_misread_name_is_refused() -> None:
    """anax's lexer reads "initial" as "iniial" and then finds no operator: the agbot refuses the policy."""
    with pytest.raises(ConstraintError, match="misreads 'initial'"):
        compile_constraints(["initial == yes"])
    compile_constraints(["inline == yes && ininString == a && intValue == 1"])


def test_not_a_list() -> None:
    with pytest.raises(ConstraintError, match="array of strings"):
        Constraints("group == canary")  # type: ignore[arg-type]
    with pytest.raises(ConstraintError, match="expected to be a string"):
        Constraints([1])  # type: ignore[list-item]


# -- both directions ---------------------------------------------------------------------------------------------------
def test_compatible_both_directions() -> None:
    policy_props: list[dict[str, Any]] = [{"name": "purpose", "value": "hello"}, {"name": "gpu", "value": False}]
    node_props: list[dict[str, Any]] = [{"name": "group", "value": "canary"}, {"name": "openhorizon.cpu", "value": 4}]
    policy_constraints = ["group == canary && openhorizon.cpu >= 2"]
    assert compatible(policy_constraints, policy_props, ["purpose in \"hello,world\""], node_props)
    assert compatible(policy_constraints, policy_props, [], node_props)
    assert not compatible(policy_constraints, policy_props, ["gpu == true"], node_props)
    assert not compatible(["group == prod"], policy_props, [], node_props)
    assert satisfies(compile_constraints(["gpu == false"]), policy_props)


def test_name_map_is_read_with_types() -> None:
    """A name → text map (types lost, as fleet_summary's property map): numbers and true/false come back."""
    match = compile_constraints(["tier >= 2 && canary == true && zone in \"eu,us\""])
    assert match({"tier": "3", "canary": "true", "zone": "eu"})
    assert not match({"tier": "x", "canary": "true", "zone": "eu"})
