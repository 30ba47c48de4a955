// crdcheck validates objects against the CRDs in a directory with the Kubernetes
// apiserver's own code (k8s.io/apiextensions-apiserver): pruning with unknown-field
// tracking (kubectl --validate=strict), defaulting, the OpenAPI schema, and the
// x-kubernetes-validations CEL rules, including transition rules against an old object,
// in the order and with the blocking rule the apiserver applies on create/update.
// It also validates the CRDs themselves as the apiserver would on `kubectl apply`.
//
// Usage: crdcheck <crd-dir> < cases.json > results.json
//
//	cases.json:   [{"object": {...}, "old": {...}?}, ...]
//	results.json: {"crdErrors": {"file": ["..."]}, "results": [[{"path": "...", "message": "..."}], ...]}
//
// The platform's TypeScript validator is tested against this output, case by case.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextinstall "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/install"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structurallisttype "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

type kindInfo struct {
	structural *structuralschema.Structural
	validator  apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

type fieldError struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

type testCase struct {
	Object map[string]interface{} `json:"object"`
	Old    map[string]interface{} `json:"old,omitempty"`
}

// The apiserver's JSON decoder turns integral numbers into int64.
func ints(x interface{}) interface{} {
	switch v := x.(type) {
	case map[string]interface{}:
		for k, e := range v {
			v[k] = ints(e)
		}
	case []interface{}:
		for i, e := range v {
			v[i] = ints(e)
		}
	case float64:
		if v == float64(int64(v)) {
			return int64(v)
		}
	}
	return x
}

func toErrors(errs field.ErrorList) []fieldError {
	out := []fieldError{}
	for _, e := range errs {
		out = append(out, fieldError{Path: e.Field, Message: e.ErrorBody()})
	}
	return out
}

// Mirrors the apiserver's customresource strategy (hasBlockingErr): schema errors of
// these types stop CEL evaluation and add one root error saying so.
func blocking(errs field.ErrorList) bool {
	for _, e := range errs {
		switch e.Type {
		case field.ErrorTypeNotSupported, field.ErrorTypeRequired, field.ErrorTypeTooLong, field.ErrorTypeTooMany, field.ErrorTypeTypeInvalid:
			return true
		}
	}
	return false
}

func prepare(k *kindInfo, obj map[string]interface{}) (map[string]interface{}, []fieldError) {
	o := ints(obj).(map[string]interface{})
	unknown := structuralpruning.PruneWithOptions(o, k.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	errs := []fieldError{}
	for _, u := range unknown {
		errs = append(errs, fieldError{Path: u, Message: fmt.Sprintf("unknown field %q", u)})
	}
	structuraldefaulting.Default(o, k.structural)
	return o, errs
}

func validate(kinds map[string]*kindInfo, c testCase) []fieldError {
	kind, _ := c.Object["kind"].(string)
	k, ok := kinds[kind]
	if !ok {
		return []fieldError{{Path: "kind", Message: fmt.Sprintf("no CRD for kind %q", kind)}}
	}
	o, res := prepare(k, c.Object)
	var old map[string]interface{}
	if c.Old != nil {
		old, _ = prepare(k, c.Old)
	}
	var errs field.ErrorList
	if old == nil {
		errs = apiservervalidation.ValidateCustomResource(nil, o, k.validator)
	} else {
		errs = apiservervalidation.ValidateCustomResourceUpdate(nil, o, old, k.validator)
	}
	errs = append(errs, structurallisttype.ValidateListSetsAndMaps(nil, k.structural, o)...)
	if blocking(errs) {
		errs = append(errs, field.Invalid(nil, nil, "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation"))
		res = append(res, toErrors(errs)...)
	} else {
		res = append(res, toErrors(errs)...)
		var oldObj interface{}
		if old != nil {
			oldObj = old
		}
		celErrs, _ := k.cel.Validate(context.TODO(), nil, k.structural, o, oldObj, celconfig.RuntimeCELCostBudget)
		res = append(res, toErrors(celErrs)...)
	}
	sort.Slice(res, func(i, j int) bool {
		if res[i].Path != res[j].Path {
			return res[i].Path < res[j].Path
		}
		return res[i].Message < res[j].Message
	})
	return res
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: crdcheck <crd-dir> < cases.json")
		os.Exit(64)
	}
	scheme := runtime.NewScheme()
	apiextinstall.Install(scheme)
	kinds := map[string]*kindInfo{}
	crdErrors := map[string][]string{}
	files, _ := filepath.Glob(filepath.Join(os.Args[1], "*.yaml"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			panic(err)
		}
		v1 := &apiextv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(b, v1); err != nil {
			crdErrors[filepath.Base(f)] = []string{err.Error()}
			continue
		}
		scheme.Default(v1)
		in := &apiextensions.CustomResourceDefinition{}
		if err := scheme.Convert(v1, in, nil); err != nil {
			panic(err)
		}
		errs := []string{}
		for _, e := range apiextvalidation.ValidateCustomResourceDefinition(context.TODO(), in) {
			errs = append(errs, e.Error())
		}
		crdErrors[filepath.Base(f)] = errs
		if len(errs) > 0 {
			continue
		}
		// The internal form keeps a schema shared by all versions in Spec.Validation.
		var s *apiextensions.JSONSchemaProps
		if in.Spec.Versions[0].Schema != nil {
			s = in.Spec.Versions[0].Schema.OpenAPIV3Schema
		} else {
			s = in.Spec.Validation.OpenAPIV3Schema
		}
		st, err := structuralschema.NewStructural(s)
		if err != nil {
			panic(err)
		}
		val, _, err := apiservervalidation.NewSchemaValidator(s)
		if err != nil {
			panic(err)
		}
		kinds[in.Spec.Names.Kind] = &kindInfo{structural: st, validator: val, cel: cel.NewValidator(st, true, celconfig.PerCallLimit)}
	}
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		fmt.Fprintln(os.Stderr, "stdin: expected a JSON array of {object, old?}:", err)
		os.Exit(65)
	}
	results := make([][]fieldError, len(cases))
	for i, c := range cases {
		results[i] = validate(kinds, c)
	}
	out, _ := json.Marshal(map[string]interface{}{"crdErrors": crdErrors, "results": results})
	os.Stdout.Write(out)
}
