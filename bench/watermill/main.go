// Command watermill-bench is the "watermill" peer of the Choreograph benchmark: the same
// choreographies (registration: 5 hops with a fan-out and a join; chain: 3 hops) written the
// way Watermill is meant to be used — a message Router with one handler per input topic, the
// CorrelationID middleware, and the watermill-kafka (Sarama) publisher and subscriber — on the
// same topics, with the same JSON payloads and the same CloudEvents binary-mode headers and key
// as the Rust implementations.
//
// One process runs one service: -role activity|coupon|points|svc1|svc2. It runs until SIGINT
// or SIGTERM. Delivery is at-least-once: the router acks (and the subscriber marks the offset)
// only after the handler's output was published synchronously with acks=all and the idempotent
// producer.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"
)

// Topics (unprefixed) and CloudEvents types, as in bench/src/model.rs.
const (
	topicUser       = "registration.user"
	topicNewcomer   = "activity.newcomer"
	topicCoupon     = "coupon.issued"
	topicPoints     = "points.granted"
	topicWelcome    = "activity.welcome"
	topicChainA     = "chain.a"
	topicChainB     = "chain.b"
	topicChainC     = "chain.c"
	typeNewcomer    = "activity.newcomer.enrolled.v1"
	typeCoupon      = "coupon.coupon.issued.v1"
	typePoints      = "points.points.granted.v1"
	typeWelcome     = "activity.welcome-package.completed.v1"
	typeChainNext   = "bench.chain.continued.v1"
	typeChainFinish = "bench.chain.finished.v1"
	welcomePoints   = 100
)

type UserRegistered struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
}

type NewcomerEnrolled struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
}

type CouponIssued struct {
	UserID     string `json:"user_id"`
	CouponCode string `json:"coupon_code"`
}

type PointsGranted struct {
	UserID string `json:"user_id"`
	Points uint32 `json:"points"`
}

type WelcomePackageCompleted struct {
	UserID     string `json:"user_id"`
	CouponCode string `json:"coupon_code"`
	Points     uint32 `json:"points"`
}

type ChainStep struct {
	UserID string `json:"user_id"`
	Step   uint32 `json:"step"`
}

// Metadata keys of Watermill messages; the marshaler maps them to and from Kafka headers.
const (
	metaType        = "ce_type"
	metaCausationID = "ce_causationid"
	metaTraceparent = "traceparent"
)

// cloudEventsMarshaler maps Watermill messages to CloudEvents 1.0 binary-mode Kafka records
// (what the Rust implementations write) and back. The record key is the correlation ID.
type cloudEventsMarshaler struct {
	source string
}

func (m cloudEventsMarshaler) Marshal(topic string, msg *message.Message) (*sarama.ProducerMessage, error) {
	correlationID := middleware.MessageCorrelationID(msg)
	if correlationID == "" {
		return nil, fmt.Errorf("message %s has no correlation ID", msg.UUID)
	}
	h := func(k, v string) sarama.RecordHeader {
		return sarama.RecordHeader{Key: []byte(k), Value: []byte(v)}
	}
	headers := []sarama.RecordHeader{
		h("ce_specversion", "1.0"),
		h("ce_id", msg.UUID),
		h("ce_type", msg.Metadata.Get(metaType)),
		h("ce_source", m.source),
		h("ce_time", time.Now().UTC().Format("2006-01-02T15:04:05.000000Z")),
		h("ce_correlationid", correlationID),
		h("content-type", "application/json"),
	}
	if c := msg.Metadata.Get(metaCausationID); c != "" {
		headers = append(headers, h("ce_causationid", c))
	}
	if t := msg.Metadata.Get(metaTraceparent); t != "" {
		headers = append(headers, h("traceparent", t))
	}
	return &sarama.ProducerMessage{
		Topic:   topic,
		Key:     sarama.StringEncoder(correlationID),
		Value:   sarama.ByteEncoder(msg.Payload),
		Headers: headers,
	}, nil
}

func (m cloudEventsMarshaler) Unmarshal(record *sarama.ConsumerMessage) (*message.Message, error) {
	metadata := make(message.Metadata, len(record.Headers)+1)
	id := ""
	for _, hd := range record.Headers {
		k, v := string(hd.Key), string(hd.Value)
		switch k {
		case "ce_id":
			id = v
		case "ce_correlationid":
			metadata.Set(middleware.CorrelationIDMetadataKey, v)
		default:
			metadata.Set(k, v)
		}
	}
	msg := message.NewMessage(id, record.Value)
	msg.Metadata = metadata
	return msg, nil
}

// childTraceparent continues the input's W3C trace with a new span ID.
func childTraceparent(parent string) string {
	if len(parent) != 55 {
		return ""
	}
	span := uuid.New()
	return fmt.Sprintf("%s%x%s", parent[:36], span[8:16], parent[52:])
}

// emit builds a follow-up message caused by in (the CorrelationID middleware copies the
// correlation ID).
func emit(in *message.Message, eventType string, data any) (*message.Message, error) {
	payload, err := json.Marshal(data)
	if err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	out := message.NewMessage(id.String(), payload)
	out.Metadata.Set(metaType, eventType)
	out.Metadata.Set(metaCausationID, in.UUID)
	if t := childTraceparent(in.Metadata.Get(metaTraceparent)); t != "" {
		out.Metadata.Set(metaTraceparent, t)
	}
	return out, nil
}

// one is a handler with one input type and one output.
func one[In any](eventType string, f func(In) any) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		var in In
		if err := json.Unmarshal(msg.Payload, &in); err != nil {
			return nil, err
		}
		out, err := emit(msg, eventType, f(in))
		if err != nil {
			return nil, err
		}
		return []*message.Message{out}, nil
	}
}

// joins holds the registration join in memory, keyed by correlation ID (as every
// implementation of the benchmark does).
type joins struct {
	mu       sync.Mutex
	partials map[string]*WelcomePackageCompleted
	seen     map[string]uint8
}

func (j *joins) add(msg *message.Message, userID string, update func(*WelcomePackageCompleted), bit uint8) ([]*message.Message, error) {
	saga := middleware.MessageCorrelationID(msg)
	j.mu.Lock()
	p, ok := j.partials[saga]
	if !ok {
		p = &WelcomePackageCompleted{UserID: userID}
		j.partials[saga] = p
	}
	update(p)
	j.seen[saga] |= bit
	done := j.seen[saga] == 3
	if done {
		delete(j.partials, saga)
		delete(j.seen, saga)
	}
	j.mu.Unlock()
	if !done {
		return nil, nil
	}
	out, err := emit(msg, typeWelcome, p)
	if err != nil {
		return nil, err
	}
	return []*message.Message{out}, nil
}

func main() {
	role := flag.String("role", "", "activity|coupon|points|svc1|svc2")
	brokers := flag.String("brokers", "127.0.0.1:9092", "bootstrap servers, comma-separated")
	prefix := flag.String("prefix", "", "topic (and consumer group) prefix")
	flag.Parse()
	if err := run(*role, strings.Split(*brokers, ","), *prefix); err != nil {
		fmt.Fprintf(os.Stderr, "watermill %s: %v\n", *role, err)
		os.Exit(1)
	}
}

func run(role string, brokers []string, prefix string) error {
	logger := watermill.NewStdLoggerWithOut(os.Stderr, false, false)
	marshaler := cloudEventsMarshaler{source: "/services/" + role}

	pubConfig := kafka.DefaultSaramaSyncPublisherConfig()
	pubConfig.Version = sarama.V4_0_0_0 // Kafka 4 refuses the old protocol versions of watermill's default V1_0_0_0
	pubConfig.Producer.RequiredAcks = sarama.WaitForAll
	pubConfig.Producer.Idempotent = true
	pubConfig.Net.MaxOpenRequests = 1 // required by Sarama's idempotent producer
	publisher, err := kafka.NewPublisher(kafka.PublisherConfig{
		Brokers:               brokers,
		Marshaler:             marshaler,
		OverwriteSaramaConfig: pubConfig,
	}, logger)
	if err != nil {
		return err
	}

	subConfig := kafka.DefaultSaramaSubscriberConfig()
	subConfig.Version = sarama.V4_0_0_0
	subConfig.Consumer.Offsets.Initial = sarama.OffsetOldest
	subscriber, err := kafka.NewSubscriber(kafka.SubscriberConfig{
		Brokers:               brokers,
		Unmarshaler:           marshaler,
		OverwriteSaramaConfig: subConfig,
		ConsumerGroup:         prefix + role,
	}, logger)
	if err != nil {
		return err
	}

	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return err
	}
	router.AddMiddleware(middleware.CorrelationID, middleware.Recoverer)

	t := func(name string) string { return prefix + name }
	switch role {
	case "activity":
		j := &joins{partials: map[string]*WelcomePackageCompleted{}, seen: map[string]uint8{}}
		router.AddHandler("enrol", t(topicUser), subscriber, t(topicNewcomer), publisher,
			one(typeNewcomer, func(e UserRegistered) any {
				return NewcomerEnrolled{UserID: e.UserID, Email: e.Email}
			}))
		router.AddHandler("join-coupon", t(topicCoupon), subscriber, t(topicWelcome), publisher,
			func(msg *message.Message) ([]*message.Message, error) {
				var e CouponIssued
				if err := json.Unmarshal(msg.Payload, &e); err != nil {
					return nil, err
				}
				return j.add(msg, e.UserID, func(p *WelcomePackageCompleted) { p.CouponCode = e.CouponCode }, 1)
			})
		router.AddHandler("join-points", t(topicPoints), subscriber, t(topicWelcome), publisher,
			func(msg *message.Message) ([]*message.Message, error) {
				var e PointsGranted
				if err := json.Unmarshal(msg.Payload, &e); err != nil {
					return nil, err
				}
				return j.add(msg, e.UserID, func(p *WelcomePackageCompleted) { p.Points = e.Points }, 2)
			})
	case "coupon":
		router.AddHandler("issue-coupon", t(topicNewcomer), subscriber, t(topicCoupon), publisher,
			one(typeCoupon, func(e NewcomerEnrolled) any {
				return CouponIssued{UserID: e.UserID, CouponCode: "WELCOME-" + e.UserID}
			}))
	case "points":
		router.AddHandler("grant-points", t(topicNewcomer), subscriber, t(topicPoints), publisher,
			one(typePoints, func(e NewcomerEnrolled) any {
				return PointsGranted{UserID: e.UserID, Points: welcomePoints}
			}))
	case "svc1":
		router.AddHandler("step-one", t(topicChainA), subscriber, t(topicChainB), publisher,
			one(typeChainNext, func(e ChainStep) any { return ChainStep{UserID: e.UserID, Step: e.Step + 1} }))
	case "svc2":
		router.AddHandler("step-two", t(topicChainB), subscriber, t(topicChainC), publisher,
			one(typeChainFinish, func(e ChainStep) any { return ChainStep{UserID: e.UserID, Step: e.Step + 1} }))
	default:
		return fmt.Errorf("unknown role %q", role)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return router.Run(ctx)
}
